"""The lightly 1.6 side of ``benchmarks/pretraining.py`` (run in lightly's own virtual environment).

``python _ssl_lightly.py METHOD DATA.npz OUT.npz --epochs N --seed S``: builds the method
from lightly's heads, losses and momentum utilities on the shared encoder, trains it with
the shared loop and views, and writes the encoder's and projector's outputs and the epoch times.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
from pathlib import Path

# keep this folder off the path (a script here once shadowed the standard library's ``ssl``)
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from lightly.loss import (  # noqa: E402
    BarlowTwinsLoss,
    DINOLoss,
    NegativeCosineSimilarity,
    NTXentLoss,
    SwaVLoss,
    VICRegLoss,
)
from lightly.models.modules import heads  # noqa: E402
from lightly.models.utils import deactivate_requires_grad, update_momentum  # noqa: E402
from lightly.utils.scheduler import cosine_schedule  # noqa: E402
from torch import nn  # noqa: E402

_spec = importlib.util.spec_from_file_location("_ssl_common", Path(_HERE) / "_ssl_common.py")
_common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_common)
Encoder, embed, train = _common.Encoder, _common.embed, _common.train

F, H, D = 125, 125, 16  # encoder width, hidden width, projection width
DINO_OUT = 1024  # DINO's prototypes (likewise's SMALL_HEADS["dino"]; the paper has 65,536)


def _teacher(module: nn.Module) -> nn.Module:
    t = copy.deepcopy(module)
    deactivate_requires_grad(t)
    return t


def build(method: str, epochs: int, steps_per_epoch: int):  # noqa: C901 - one branch per method
    enc = Encoder()
    state: dict = {}
    if method == "simclr":
        proj = heads.SimCLRProjectionHead(F, H, D, batch_norm=False)
        crit = NTXentLoss(temperature=0.5)
        mods = [enc, proj]

        def loss(a, b):
            return crit(proj(enc(a)), proj(enc(b)))

    elif method == "moco":
        proj = heads.MoCoProjectionHead(F, H, D)
        t_enc, t_proj = _teacher(enc), _teacher(proj)
        crit = NTXentLoss(temperature=0.5, memory_bank_size=(1024, D))
        mods = [enc, proj]

        def loss(a, b):
            with torch.no_grad():
                k_a, k_b = t_proj(t_enc(a)), t_proj(t_enc(b))
            return 0.5 * (crit(proj(enc(a)), k_b) + crit(proj(enc(b)), k_a))

        state["teachers"] = [(enc, t_enc), (proj, t_proj)]
    elif method in ("byol", "simsiam"):
        if method == "byol":
            proj, pred = heads.BYOLProjectionHead(F, H, D), heads.BYOLPredictionHead(D, H, D)
        else:
            proj, pred = heads.SimSiamProjectionHead(F, H, D), heads.SimSiamPredictionHead(D, 64, D)
        crit = NegativeCosineSimilarity()
        mods = [enc, proj, pred]
        if method == "byol":
            t_enc, t_proj = _teacher(enc), _teacher(proj)
            state["teachers"] = [(enc, t_enc), (proj, t_proj)]

            def target(x):
                with torch.no_grad():
                    return t_proj(t_enc(x))
        else:

            def target(x):
                return proj(enc(x)).detach()

        def loss(a, b):
            p_a, p_b = pred(proj(enc(a))), pred(proj(enc(b)))
            return 0.5 * (crit(p_a, target(b)) + crit(p_b, target(a)))

    elif method == "swav":
        proj, protos = heads.SwaVProjectionHead(F, H, D), heads.SwaVPrototypes(D, 30)
        crit = SwaVLoss()
        mods = [enc, proj, protos]

        def loss(a, b):
            protos.normalize()
            outs = [protos(nn.functional.normalize(proj(enc(v)), dim=1)) for v in (a, b)]
            return crit(outs, [])

    elif method == "dino":
        proj = heads.DINOProjectionHead(F, H, D, DINO_OUT, batch_norm=True)
        t_enc = _teacher(enc)
        t_proj = heads.DINOProjectionHead(F, H, D, DINO_OUT, batch_norm=True)  # weight norm: no deepcopy
        t_proj.load_state_dict(proj.state_dict())
        deactivate_requires_grad(t_proj)
        crit = DINOLoss(
            output_dim=DINO_OUT,
            warmup_teacher_temp=0.04,
            teacher_temp=0.04,  # constant: SMALL_HEADS["dino"]
            warmup_teacher_temp_epochs=max(1, int(0.3 * epochs)),
        )
        mods = [enc, proj]
        state["teachers"] = [(enc, t_enc), (proj, t_proj)]
        state["epoch"] = 0

        def loss(a, b):
            with torch.no_grad():
                t = [t_proj(t_enc(a)), t_proj(t_enc(b))]
            s = [proj(enc(a)), proj(enc(b))]
            return crit(t, s, epoch=state["epoch"])

    elif method == "barlow_twins":
        proj = heads.BarlowTwinsProjectionHead(F, H, D)
        crit = BarlowTwinsLoss(lambda_param=0.05)
        mods = [enc, proj]

        def loss(a, b):
            return crit(proj(enc(a)), proj(enc(b)))

    elif method == "vicreg":
        proj = heads.VICRegProjectionHead(F, H, D, num_layers=3)
        crit = VICRegLoss()
        mods = [enc, proj]

        def loss(a, b):
            return crit(proj(enc(a)), proj(enc(b)))

    else:
        raise SystemExit(f"unknown method {method}")

    def after_step(step, total):
        if "epoch" in state:
            state["epoch"] = step // steps_per_epoch
        for student, teacher in state.get("teachers", []):
            update_momentum(student, teacher, m=cosine_schedule(step, total, 0.99, 1.0))

    params = [p for m in mods for p in m.parameters() if p.requires_grad]
    return loss, params, after_step, mods, lambda x: proj(enc(x))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("method")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = np.load(args.data)
    torch.manual_seed(args.seed)
    loss, params, after_step, mods, project = build(
        args.method, args.epochs, len(data["x"]) // args.batch_size
    )
    seconds = train(
        loss,
        params,
        data["x"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        after_step=after_step,
    )
    for m in mods:
        m.eval()
    enc = mods[0]
    np.savez(
        args.out,
        f_train=embed(enc, data["x"]),
        f_test=embed(enc, data["x_test"]),
        p_train=embed(project, data["x"]),
        p_test=embed(project, data["x_test"]),
        seconds=np.asarray(seconds),
    )


if __name__ == "__main__":
    main()
