"""File input/output shared by the CLI, the index and the trainer.

* atomic writes: a temporary file in the target's directory, ``fsync``, then
  ``os.replace`` — a reader sees the old file or the new one, never half of one;
* :func:`atomic_write_json` writes strict JSON (RFC 8259): NaN and infinite
  floats, NumPy ones included, become ``null`` — never ``NaN``/``Infinity``,
  which most JSON parsers other than Python's reject;
* :func:`load_array`: ``.npy``, ``.npz`` (first array, or a named key) and CSV
  (numeric tables, or one column of string labels).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def _default_mode(base: int) -> int:
    """``base`` (0o666 files, 0o777 directories) less the process umask, as ``open``/``mkdir`` give.

    ``tempfile`` creates private entries (0o600 / 0o700); the renamed result should not be.
    """
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + fsync + rename).

    Temporaries of ``path`` left by a killed writer are removed first. ``path`` must not be
    a folder (:class:`IsADirectoryError`).
    """
    from likewise.artifacts import remove_stale_temporaries, temporary_name

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.parent / temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, _default_mode(0o666))
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def fsync_directory(path: str | os.PathLike) -> None:
    """Make a new, renamed or removed entry of directory ``path`` durable (``fsync`` of the folder)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as strict JSON, atomically (see :func:`to_strict_json`)."""
    return atomic_write_text(path, to_strict_json(obj) + "\n")


def to_strict_json(obj: Any) -> str:
    """``obj`` as indented, key-sorted strict JSON text.

    NumPy scalars and arrays become Python numbers and lists, paths strings, and
    every NaN or infinite float (at any depth) ``null``. Other types raise ``TypeError``.
    """
    return json.dumps(_finite_json(obj), indent=2, sort_keys=True, allow_nan=False, default=_json_default)


def _finite_json(obj: Any) -> Any:
    """A copy of ``obj`` with NumPy values as Python ones and non-finite floats as ``None``."""
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {(k.item() if isinstance(k, np.generic) else k): _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_json(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, kind: str, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a ``kind`` artifact directory in a temporary sibling; move it into place on success.

    What is at ``path`` is checked first (:func:`likewise.artifacts.check_replaceable`): only
    nothing, an empty folder or an artifact of the same ``kind`` (any likewise artifact with
    ``overwrite``) is replaced, and only once the new one is complete. Temporaries left by a
    killed writer of ``path`` are removed; on an error the temporary is removed too.
    """
    from likewise.artifacts import check_replaceable, remove_stale_temporaries, temporary_name

    path = Path(path)
    check_replaceable(path, kind, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.parent / temporary_name(path)
    tmp.mkdir(mode=0o700)
    try:
        os.chmod(tmp, _default_mode(0o777))
        yield tmp
        check_replaceable(path, kind, overwrite=overwrite)  # nothing foreign arrived meanwhile
        if path.exists():
            old = path.parent / temporary_name(path, "old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_directory(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """``np.save`` made atomic."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


NPY_MAGIC = b"\x93NUMPY"


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """A ``.npy`` array of any shape, never unpickled.

    ``FileNotFoundError`` for a missing file; ``ValueError`` for a file that is not a
    ``.npy`` (checked by its header), a damaged one, or one holding Python objects.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file", str(path))
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a .npy file")
    with open(path, "rb") as fh:
        head = fh.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        raise ValueError(f"{path} is not a .npy file (it lacks the NumPy header; save it with numpy.save)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise ValueError(f"{path} holds pickled Python objects; likewise does not load pickles") from None
        raise ValueError(f"{path} is not a readable .npy array: {exc}") from None
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable .npy array: {exc}") from None


def load_array(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """Load a 1-D or 2-D array from ``.npy``, ``.npz`` or ``.csv``/``.txt``/``.tsv``.

    ``.npz``: the array ``key`` if given, else the only array, else ``embeddings``
    / ``labels`` / ``x`` / ``y`` is not guessed — a file with several arrays needs
    ``key``. CSV: numeric, comma separated, an optional header line is skipped; or one
    column of string labels (see :func:`_load_csv`).
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for one
    that cannot be read as an array. Pickled object arrays are refused.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file", str(path))
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = load_npy(path)
        elif suffix == ".npz":
            with open(path, "rb") as fh:
                if fh.read(4) != b"PK\x03\x04":
                    raise ValueError(
                        f"{path} is not a .npz file (not a zip archive; write it with numpy.savez)"
                    )
            with np.load(path, allow_pickle=False) as data:
                names = list(data.keys())
                if key is None:
                    if len(names) != 1:
                        raise ValueError(
                            f"{path} holds arrays {names}; say which one (e.g. {path}:{names[0]})"
                        )
                    key = names[0]
                if key not in names:
                    raise ValueError(f"{path} has no array {key!r} (it has {names})")
                array = data[key]
        elif suffix in (".csv", ".txt", ".tsv"):
            delimiter = "\t" if suffix == ".tsv" else ","
            array = _load_csv(path, delimiter)
        else:
            raise ValueError(f"{path}: unsupported file type {suffix!r} (expected .npy, .npz or .csv)")
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable array file: {exc}") from exc
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ValueError(f"{path} holds pickled Python objects; likewise does not load pickles") from None
        raise
    if array.dtype == object:
        raise ValueError(f"{path} holds Python objects, not numbers")
    if array.ndim not in (1, 2):
        raise ValueError(f"{path} holds an array of shape {array.shape}; expected 1-D or 2-D")
    return array


#: first lines of a one-column CSV read as a column name, not as a label
HEADER_NAMES = frozenset(
    {"label", "labels", "class", "classes", "class_name", "category", "name", "identity", "target", "y"}
)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _load_csv(path: Path, delimiter: str) -> np.ndarray:
    """A numeric table (optional header line skipped), or one column of string labels.

    A one-column file whose values are not all numbers is read as string labels
    (surrounding quotes and spaces removed). Its first line is a header, and
    dropped, when it is a usual column name (:data:`HEADER_NAMES`, any case) that
    does not occur again in the column; anything else is the first label.
    """
    import csv

    with open(path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path} is empty")
    rows = [[v.strip() for v in row] for row in csv.reader(lines, delimiter=delimiter)]
    one_column = all(len(row) == 1 for row in rows)
    if one_column and not all(_is_number(row[0]) for row in (rows[1:] or rows)):
        values = [row[0] for row in rows]
        if values[0].lower() in HEADER_NAMES and values[0] not in values[1:]:
            values = values[1:]
        if not values:
            raise ValueError(f"{path} has a header line but no labels")
        if "" in values:
            raise ValueError(f"{path} contains an empty label")
        return np.array(values, dtype=str)
    skip = 0 if all(_is_number(v) for v in lines[0].split(delimiter)) else 1
    try:
        array = np.loadtxt(lines[skip:], delimiter=delimiter, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path} is not a numeric table (or a one-column file of labels): {exc}") from exc
    if array.shape[1] == 1:
        array = array[:, 0]
        if np.all(array == np.round(array)):
            array = array.astype(np.int64)
    return array


def split_key(spec: str) -> tuple[str, str | None]:
    """``"file.npz:key"`` -> ``("file.npz", "key")``; other paths -> ``(path, None)``."""
    head, sep, tail = spec.rpartition(":")
    if sep and head.lower().endswith(".npz"):
        return head, tail
    return spec, None
