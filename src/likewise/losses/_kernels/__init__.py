"""The fast paths behind the losses (private): none of this is a loss's specification.

Each loss module (``likewise/losses/<loss>.py``) holds its formula as plain autograd on
the similarity matrix and the relation masks; that plain function *is* the loss. The
modules here compute the same values faster, and each sits next to the function that says
when it may run (``eligible``: shapes, dtypes, devices and settings only, never values); a
loss calls that check and falls back to its plain path otherwise.
``tests/test_losses_contract.py`` proves each loss's default path equal to ``fast=False``
(plain) in values and gradients.

One kernel module per loss, named after it (``contrastive``, ``lifted_structure``,
``multi_similarity``, ``triplet``, ``ntxent``, ``supcon``, ``soft_nearest_neighbor``,
``npairs``, ``circle``, ``proxy_anchor``, ``arcface``, ``log_ratio``, ``fast_ap``), and the
shared machinery they are built from:

* :mod:`.fused`: a loss value with its gradient attached, computed in the same pass;
* :mod:`.positives`: the positive pairs of class ids as index lists, no ``[B, N]`` mask
  (their length depends on the labels, so the kernels that use them run on the CPU only);
* :mod:`.row_softmax`: a whole row-softmax loss in one GEMM-sized buffer;
* :mod:`.row_blocks` / :mod:`.chunking`: rows in blocks for large batches;
* :mod:`.euclidean`: Euclidean distance matrices with a two-GEMM backward.
"""
