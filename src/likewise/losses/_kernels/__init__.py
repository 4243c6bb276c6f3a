"""The fast paths behind the losses (private): none of this is a loss's specification.

Each loss module (``likewise/losses/<loss>.py``) holds its formula as plain autograd on
the similarity matrix and the relation masks; that plain function *is* the loss. The
modules here compute the same values faster: gradients written into a buffer in one
pass (:mod:`.fused`), positives as index lists instead of ``[B, N]`` masks
(:mod:`.positives`), a whole row-softmax loss in one GEMM-sized pass (:mod:`.row_softmax`),
row blocks for large batches (:mod:`.chunking`). Every kernel sits next to the function
that says when it may run (its eligibility check); a loss calls that check and falls back
to its plain path otherwise. ``tests/test_losses_contract.py`` proves each loss's default
(kernel) path equal to ``fast=False`` (plain) in values and gradients.
"""
