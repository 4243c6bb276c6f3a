"""Which torch device a call runs on, with a clear error where it cannot be used; input checks
that do not make the host wait for the device."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CPU; otherwise ``torch.device(device)``.

    ``ValueError`` for a string that names no device (``"gpu0"``), and for a CUDA or MPS device
    on a machine without one (torch itself would fail later with an ``AssertionError``).
    """
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, str | torch.device):
        raise TypeError(f"device must be a string or a torch.device, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a torch device: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available")
    count = torch.cuda.device_count() if dev.type == "cuda" else 0
    if dev.type == "cuda" and dev.index is not None and dev.index >= count:
        raise ValueError(f"device={device!r} requested but there are {count} CUDA devices")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device={device!r} requested but MPS is not available")
    return dev


__all__ = ["resolve_device"]


def check_on_device(condition: torch.Tensor, message: str) -> None:
    """``ValueError(message)`` unless the 0-d bool tensor ``condition`` holds.

    A device-side assertion (``torch._assert_async``): on a GPU the host does not wait for the
    value (a violation stops the stream later, with ``message``); on the CPU it is checked here.
    """
    try:
        torch._assert_async(condition, message)
    except RuntimeError:
        raise ValueError(message) from None
