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
