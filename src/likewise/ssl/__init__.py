"""Self-supervised pre-training methods: an encoder, its heads, a two-view loss.

Contrastive (:class:`SimCLR`, :class:`MoCo`), clustering (:class:`SwAV`), distillation
(:class:`BYOL`, :class:`SimSiam`, :class:`DINO`), redundancy reduction
(:class:`BarlowTwins`, :class:`VICReg`), and :class:`Naive` (plain similarity
maximisation, which collapses). ``method = SimCLR(encoder, encoder_dim)``;
``loss = method(x_a, x_b)``; ``method.update(step, total_steps)`` after each optimiser
step; ``method.encoder`` is the representation. See ``base`` for the conventions.
"""

from likewise.ssl.barlow_twins import BarlowTwins
from likewise.ssl.base import SSLMethod
from likewise.ssl.byol import BYOL
from likewise.ssl.dino import DINO
from likewise.ssl.moco import MoCo
from likewise.ssl.momentum import MomentumUpdater, cosine_schedule, momentum_copy
from likewise.ssl.naive import Naive
from likewise.ssl.simclr import SimCLR
from likewise.ssl.simsiam import SimSiam
from likewise.ssl.swav import SwAV
from likewise.ssl.vicreg import VICReg

#: method classes by command-line name
METHODS: dict[str, type[SSLMethod]] = {
    "simclr": SimCLR,
    "moco": MoCo,
    "byol": BYOL,
    "simsiam": SimSiam,
    "swav": SwAV,
    "dino": DINO,
    "barlow_twins": BarlowTwins,
    "vicreg": VICReg,
    "naive": Naive,
}

__all__ = [
    "BYOL",
    "DINO",
    "METHODS",
    "BarlowTwins",
    "MoCo",
    "MomentumUpdater",
    "Naive",
    "SSLMethod",
    "SimCLR",
    "SimSiam",
    "SwAV",
    "VICReg",
    "cosine_schedule",
    "momentum_copy",
]
