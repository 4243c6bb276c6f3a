"""Similarity losses: each a functional form and an ``nn.Module``.

Supervised losses are called ``loss(embeddings, labels, *, ref_emb=None,
ref_labels=None)`` (pytorch-metric-learning's convention, see ``base``) and
return a scalar tensor; mining goes through ``miner=`` in the constructor.
"""

from likewise.losses.base import MetricLoss
from likewise.losses.circle import CircleLoss, circle_loss
from likewise.losses.log_ratio import LogRatioLoss, log_ratio_loss
from likewise.losses.pair import (
    ContrastiveLoss,
    LiftedStructureLoss,
    MultiSimilarityLoss,
    contrastive_loss,
    lifted_structure_loss,
    multi_similarity_loss,
)
from likewise.losses.proxy import ArcFaceLoss, ProxyAnchorLoss, arcface_loss, proxy_anchor_loss
from likewise.losses.ranking import FastAPLoss, fast_ap_loss
from likewise.losses.softmax import (
    NPairsLoss,
    NTXentLoss,
    SoftNearestNeighborLoss,
    SupConLoss,
    npairs_loss,
    ntxent_loss,
    soft_nearest_neighbor_loss,
    supcon_loss,
)
from likewise.losses.triplet import TripletMarginLoss, triplet_margin_loss

#: every supervised loss class by name (used by configs and the CLI)
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

__all__ = [
    "LOSSES",
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
