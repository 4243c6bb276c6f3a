"""Lightning checkpoints written atomically (temporary file, fsync, rename)."""

from __future__ import annotations

import io
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from likewise.io import atomic_write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    """A SIGKILL while saving leaves the previous checkpoint intact, never half a file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())


def check_checkpoint(path: Any, module: torch.nn.Module | None = None) -> dict[str, Any]:
    """Read a training checkpoint safely (``weights_only``: nothing is unpickled) and check its shape.

    ``ValueError`` naming the file when it is truncated, not a checkpoint, not Lightning's
    layout, or (given ``module``) holds weights of other names or shapes than ``module``'s.
    """
    advice = "remove it to start over, or resume from another run"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or hostile files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path} is not a readable likewise checkpoint ({reason[:200]}); {advice}") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(
            f"{path} is not a likewise checkpoint (it holds a {type(checkpoint).__name__}); {advice}"
        )
    expected = {"state_dict": dict, "optimizer_states": list, "loops": dict, "epoch": int, "global_step": int}
    for key, kind in expected.items():
        if not isinstance(checkpoint.get(key), kind):
            raise ValueError(
                f"{path} is not a likewise checkpoint (its {key!r} is missing or wrong); {advice}"
            )
    if module is not None:
        own = module.state_dict()
        saved = checkpoint["state_dict"]
        if set(saved) != set(own):
            differ = sorted(set(saved) ^ set(own))[:3]
            raise ValueError(f"{path} holds weights of another model ({', '.join(differ)}); {advice}")
        for name, tensor in saved.items():
            if not isinstance(tensor, torch.Tensor) or tensor.shape != own[name].shape:
                raise ValueError(f"{path}: weight {name!r} has another shape than the model's; {advice}")
    return checkpoint
