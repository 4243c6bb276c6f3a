"""Similarity losses: each a functional form and an ``nn.Module``.

Supervised losses are called ``loss(embeddings, labels, *, ref_emb=None,
ref_labels=None)`` (pytorch-metric-learning's convention, see ``base``) and
return a scalar tensor; mining goes through ``miner=`` in the constructor.
Two-view self-supervised losses are called ``loss(z_a, z_b)`` (see ``two_view``).
"""

from likewise.losses.arcface import ArcFaceLoss, arcface_loss
from likewise.losses.barlow_twins import BarlowTwinsLoss, barlow_twins_loss
from likewise.losses.base import MetricLoss
from likewise.losses.circle import CircleLoss, circle_loss
from likewise.losses.contrastive import ContrastiveLoss, contrastive_loss
from likewise.losses.dino import DINOLoss, dino_loss
from likewise.losses.fast_ap import FastAPLoss, fast_ap_loss
from likewise.losses.info_nce import InfoNCELoss, info_nce_loss
from likewise.losses.lifted_structure import LiftedStructureLoss, lifted_structure_loss
from likewise.losses.log_ratio import LogRatioLoss, log_ratio_loss
from likewise.losses.multi_similarity import MultiSimilarityLoss, multi_similarity_loss
from likewise.losses.negative_cosine import NegativeCosineLoss, negative_cosine_loss
from likewise.losses.npairs import NPairsLoss, npairs_loss
from likewise.losses.ntxent import NTXentLoss, ntxent_loss
from likewise.losses.proxy_anchor import ProxyAnchorLoss, proxy_anchor_loss
from likewise.losses.soft_nearest_neighbor import SoftNearestNeighborLoss, soft_nearest_neighbor_loss
from likewise.losses.supcon import SupConLoss, supcon_loss
from likewise.losses.swav import SwAVLoss, sinkhorn, swav_loss
from likewise.losses.triplet_margin import TripletMarginLoss, triplet_margin_loss
from likewise.losses.two_view import TwoViewLoss
from likewise.losses.vicreg import VICRegLoss, vicreg_loss

#: every supervised loss class by name: configs and the CLI look losses up here, and
#: tests/test_losses_contract.py runs every entry (add a new loss here)
LOSSES: dict[str, type[MetricLoss]] = {
    cls.__name__: cls
    for cls in (
        ContrastiveLoss,
        TripletMarginLoss,
        LiftedStructureLoss,
        NPairsLoss,
        NTXentLoss,
        SupConLoss,
        SoftNearestNeighborLoss,
        MultiSimilarityLoss,
        FastAPLoss,
        LogRatioLoss,
        ProxyAnchorLoss,
        ArcFaceLoss,
        CircleLoss,
    )
}

#: every two-view (self-supervised) loss class by name
TWO_VIEW_LOSSES: dict[str, type[TwoViewLoss]] = {
    cls.__name__: cls
    for cls in (InfoNCELoss, NegativeCosineLoss, BarlowTwinsLoss, VICRegLoss, SwAVLoss, DINOLoss)
}

__all__ = [
    "LOSSES",
    "TWO_VIEW_LOSSES",
    "BarlowTwinsLoss",
    "DINOLoss",
    "InfoNCELoss",
    "NegativeCosineLoss",
    "SwAVLoss",
    "TwoViewLoss",
    "VICRegLoss",
    "barlow_twins_loss",
    "dino_loss",
    "info_nce_loss",
    "negative_cosine_loss",
    "sinkhorn",
    "swav_loss",
    "vicreg_loss",
    "ArcFaceLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "FastAPLoss",
    "LiftedStructureLoss",
    "LogRatioLoss",
    "MetricLoss",
    "MultiSimilarityLoss",
    "NPairsLoss",
    "NTXentLoss",
    "ProxyAnchorLoss",
    "SoftNearestNeighborLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "arcface_loss",
    "circle_loss",
    "contrastive_loss",
    "fast_ap_loss",
    "lifted_structure_loss",
    "log_ratio_loss",
    "multi_similarity_loss",
    "npairs_loss",
    "ntxent_loss",
    "proxy_anchor_loss",
    "soft_nearest_neighbor_loss",
    "supcon_loss",
    "triplet_margin_loss",
]
