"""Request inputs -> arrays: base64 images and raw vectors to model inputs, embeddings checked.

Images are decoded as the folder loader reads them (:mod:`likewise.data.folder`):
Pillow, converted to grayscale or RGB to match the model's channels, resized
(bilinear) to its input size and scaled to [0, 1]. Only PNG and JPEG are taken,
and only up to :data:`MAX_PIXELS` pixels (checked from the header, before the
pixels are decoded). A ``vector`` is the model's raw input, flattened
(``prod(input_shape)`` numbers). Anything that does not fit raises
:class:`InputError` (an HTTP 422).
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Sequence

import numpy as np

from likewise.serve.schemas import Input

#: largest image accepted (width x height)
MAX_PIXELS = 4096 * 4096
FORMATS = ("PNG", "JPEG")


class InputError(ValueError):
    """A request input that does not fit the model (answered with HTTP 422)."""


def decode_image(text: str, input_shape: Sequence[int], where: str = "image") -> np.ndarray:
    """Base64 PNG/JPEG -> float32 ``input_shape`` (``[C, H, W]``, C = 1 or 3) in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise InputError(
            f"{where}: this model takes inputs of shape {list(input_shape)}, not images; send 'vector'"
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{where} is not valid base64") from None
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            if img.width * img.height > MAX_PIXELS:
                raise InputError(
                    f"{where} is {img.width}x{img.height} pixels; at most {MAX_PIXELS} pixels are accepted"
                )
            img = img.convert("L" if input_shape[0] == 1 else "RGB")
            height, width = int(input_shape[1]), int(input_shape[2])
            if (img.height, img.width) != (height, width):
                img = img.resize((width, height), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{where} could not be decoded as PNG or JPEG ({type(exc).__name__})") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def as_vector(values: Sequence[float], size: int, what: str, where: str) -> np.ndarray:
    if len(values) != size:
        raise InputError(f"{where} has {len(values)} values but {what} has {size}")
    with np.errstate(over="ignore"):
        vec = np.asarray(values, dtype=np.float32)
    if not np.isfinite(vec).all():
        raise InputError(f"{where} holds values beyond the float32 range")
    return vec


class Split:
    """Inputs separated into model inputs (``raw``, to embed) and given ``embeddings``,
    with the position of each in the request."""

    def __init__(self, n: int, raw: np.ndarray, raw_at: list[int], emb: np.ndarray, emb_at: list[int]):
        self.n, self.raw, self.raw_at, self.emb, self.emb_at = n, raw, raw_at, emb, emb_at

    def assemble(self, raw_embedded: np.ndarray) -> np.ndarray:
        """All ``n`` embeddings in request order, given the embeddings of :attr:`raw`."""
        out = np.empty((self.n, self.emb.shape[1]), np.float32)
        out[self.raw_at] = raw_embedded
        out[self.emb_at] = self.emb
        return out


def split_inputs(
    inputs: Sequence[Input], input_shape: Sequence[int], dim: int, name: str = "inputs"
) -> Split:
    """Decode and check every input (images decoded, sizes checked against the model)."""
    flat = int(np.prod(input_shape))
    raw, raw_at, emb, emb_at = [], [], [], []
    for i, item in enumerate(inputs):
        where = f"{name}[{i}]"
        if item.image is not None:
            raw.append(decode_image(item.image, input_shape, f"{where}.image"))
            raw_at.append(i)
        elif item.vector is not None:
            vec = as_vector(item.vector, flat, f"the model's input {list(input_shape)}", f"{where}.vector")
            raw.append(vec.reshape(tuple(input_shape)))
            raw_at.append(i)
        else:
            emb.append(as_vector(item.embedding, dim, "the model's embedding", f"{where}.embedding"))
            emb_at.append(i)
    raw_arr = np.stack(raw) if raw else np.zeros((0, *input_shape), np.float32)
    emb_arr = np.stack(emb) if emb else np.zeros((0, dim), np.float32)
    return Split(len(inputs), raw_arr, raw_at, emb_arr, emb_at)


def embeddings_matrix(rows: Sequence[Sequence[float]], dim: int, name: str = "embeddings") -> np.ndarray:
    """``[[...], ...]`` -> float32 ``[n, dim]`` (each row checked)."""
    return np.stack([as_vector(r, dim, "the model's embedding", f"{name}[{i}]") for i, r in enumerate(rows)])
