"""What a writer may replace, and how a reader checks what it loads.

likewise never destroys a file or folder it did not write. Every writer of a path
asks this module first:

* a *directory artifact* (an index, a matcher, a model directory) may replace
  nothing, an empty folder, or an artifact of its own kind, recognised by its
  manifest (``index.json``, ``matcher.json``, ``model.json`` with the right
  ``format``) and by holding nothing but the entries that kind writes. With
  ``overwrite=True`` (``--force`` in the CLI) it may also replace a likewise
  artifact of another kind. A foreign file or folder is never replaced:
  :class:`FileExistsError` says what is there;
* an *output folder* written in place (a training run, an evaluation) may be new,
  empty, or hold only the entries such a run writes;
* an *output file* (``E.npy``, ``results.jsonl``, a PNG) may replace a file of the
  same format (recognised by its first bytes), never a folder or another kind of file.

Temporaries are named ``.<target>.lw-<pid>-<random>.tmp`` next to their target;
one left by a killed writer (its process is gone) is removed by the next write to
the same target (:func:`remove_stale_temporaries`).

Loading: manifests list each file with its size and SHA-256 (:func:`file_record`);
:func:`verify_files` refuses a path that leaves the artifact, a link, a missing
file or one whose size or digest differs, naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ArtifactKind:
    """A directory artifact: its manifest file, the manifest's ``format``, the entries it may hold."""

    manifest: str
    format: str | None  # None: the manifest is not JSON (a run's config.yaml); its presence is enough
    entries: frozenset[str]


#: entries a run folder (``likewise train`` / ``demo`` / ``pretrain``) writes at its top level
RUN_ENTRIES = frozenset(
    {"config.yaml", "checkpoints", "logs", "model", "metrics.json", "report.html", "lightning_logs"}
)

#: kind name -> how to recognise it
KINDS: dict[str, ArtifactKind] = {
    "run": ArtifactKind("config.yaml", None, RUN_ENTRIES),
    "index": ArtifactKind("index.json", "likewise-index", frozenset({"index.json", "index.faiss"})),
    "matcher": ArtifactKind("matcher.json", "likewise-matcher", frozenset({"matcher.json", "index"})),
    "model": ArtifactKind(
        "model.json", "likewise-model", frozenset({"model.json", "model.safetensors", "index", "matcher"})
    ),
    # a snapshot inside a `likewise serve` store (the store itself is checked by its own store.json)
    "snapshot": ArtifactKind("items.json", None, frozenset({"items.json", "index"})),
}

#: entries ``likewise evaluate --out`` writes
EVALUATION_ENTRIES = frozenset({"metrics.json", "report.html"})

#: output file kinds -> a test of a file's first bytes
_SIGNATURES = {
    "npy": lambda head: head.startswith(b"\x93NUMPY"),
    "png": lambda head: head.startswith(b"\x89PNG\r\n\x1a\n"),
    "json": lambda head: head.lstrip()[:1] in (b"{", b"["),
    "jsonl": lambda head: head.lstrip()[:1] in (b"{", b""),
    "html": lambda head: b"<!doctype html" in head.lower() or b"<html" in head.lower(),
    "text": lambda head: b"\x00" not in head,
    "safetensors": lambda head: len(head) > 8 and head[8:9] == b"{",
}

_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.lw-(?P<pid>\d+)-[0-9a-z_]+\.(tmp|old)$")


# ----------------------------------------------------------------------------- what is there


def _listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if not _TEMPORARY.match(p.name))


def kind_of(path: str | os.PathLike) -> str | None:
    """The likewise artifact kind of directory ``path`` (``"index"``, ...), or ``None``."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return None
    names = set(_listing(path))
    for name, kind in KINDS.items():
        if kind.manifest not in names or not names <= kind.entries:
            continue
        if kind.format is None:
            return name
        try:
            meta = json.loads((path / kind.manifest).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(meta, dict) and meta.get("format") == kind.format:
            return name
    return None


def _describe(path: Path) -> str:
    names = _listing(path)
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"it holds {len(names)} entr{'y' if len(names) == 1 else 'ies'}: {shown}"


def check_replaceable(path: str | os.PathLike, kind: str, *, overwrite: bool = False) -> None:
    """Raise :class:`FileExistsError` unless a ``kind`` artifact may be written at ``path``.

    Allowed: nothing there, an empty folder, a ``kind`` artifact; with ``overwrite``, any
    likewise artifact. Never a file, a link or a folder likewise did not write.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}; expected one of {', '.join(KINDS)}")
    path = Path(path)
    if path.is_symlink():
        raise FileExistsError(f"{path} is a symbolic link; likewise does not replace it: choose another path")
    if not path.exists():
        return
    if not path.is_dir():
        raise FileExistsError(
            f"{path} is an existing file, not a likewise {kind} directory; likewise never replaces "
            "files it did not write: choose another path"
        )
    if not _listing(path):
        return
    found = kind_of(path)
    if found == kind:
        return
    if found is not None:
        if overwrite:
            return
        raise FileExistsError(
            f"{path} holds a likewise {found}, not a {kind}; pass overwrite=True (--force) to replace it"
        )
    raise FileExistsError(
        f"{path} is a folder that is not a likewise {kind} ({_describe(path)}); likewise never "
        "replaces files it did not write: choose another path or empty it"
    )


def check_output_dir(path: str | os.PathLike, entries: frozenset[str], what: str) -> None:
    """Raise :class:`FileExistsError` unless ``path`` is new, an empty folder, or holds only ``entries``.

    For folders written in place (``what`` names the writer in the message).
    """
    path = Path(path)
    if path.is_symlink() and not path.is_dir():
        raise FileExistsError(f"{path} is a symbolic link to nothing; choose another path")
    if not path.exists():
        return
    if not path.is_dir():
        raise FileExistsError(f"{path} is an existing file, not a folder; choose another path")
    foreign = [name for name in _listing(path) if name not in entries]
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise FileExistsError(
            f"{path} holds files that are not {what} outputs ({shown}); likewise never replaces "
            "files it did not write: choose another path or empty it"
        )


def check_output_file(path: str | os.PathLike, kind: str) -> None:
    """Raise :class:`FileExistsError` unless a ``kind`` file (``npy``, ``json``, ...) may be written.

    Allowed: nothing there, or a regular file of the same format.
    """
    if kind not in _SIGNATURES:
        raise ValueError(f"unknown output file kind {kind!r}; expected one of {', '.join(_SIGNATURES)}")
    path = Path(path)
    if path.is_symlink():
        raise FileExistsError(f"{path} is a symbolic link; likewise does not replace it: choose another path")
    if not path.exists():
        return
    if not path.is_file():
        raise FileExistsError(f"{path} is a folder; choose a file name for the {kind} output")
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head and not _SIGNATURES[kind](head):
        raise FileExistsError(
            f"{path} exists and is not a {kind} file; likewise never replaces files it did not write: "
            "choose another path"
        )


# ----------------------------------------------------------------------------- temporaries


def temporary_name(target: Path, suffix: str = "tmp") -> str:
    """A sibling name for a temporary of ``target``: ``.<name>.lw-<pid>-<random>.<suffix>``."""
    return f".{target.name}.lw-{os.getpid()}-{os.urandom(6).hex()}.{suffix}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove temporaries of ``target`` left by writers whose process is gone; returns them."""
    target = Path(target)
    parent = target.parent
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        match = _TEMPORARY.match(entry.name)
        if not match or match["target"] != target.name or _alive(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


# ----------------------------------------------------------------------------- verification


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """``{"size": bytes, "sha256": hex}`` of a file, for a manifest."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return {"size": size, "sha256": digest.hexdigest()}


def inside(directory: Path, name: Any, manifest: Path) -> Path:
    """``directory / name`` for a plain file name listed in ``manifest``; ``ValueError`` otherwise."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or Path(name).name != name
        or "\\" in name
    ):
        raise ValueError(f"{manifest}: {name!r} is not a file name inside {directory}")
    return directory / name


def verify_files(directory: str | os.PathLike, files: Any, manifest: str | os.PathLike) -> None:
    """Check the files a manifest lists (``{name: {"size", "sha256"}}``) against the disk.

    ``ValueError`` naming the file for a name outside ``directory``, a link, a missing
    file, or a size or SHA-256 that differs.
    """
    directory, manifest = Path(directory), Path(manifest)
    if not isinstance(files, dict) or not files:
        raise ValueError(f"{manifest}: 'files' must list each file with its size and sha256")
    for name, record in files.items():
        path = inside(directory, name, manifest)
        if not isinstance(record, dict) or not isinstance(record.get("size"), int):
            raise ValueError(f"{manifest}: the entry for {name} needs 'size' and 'sha256'")
        if path.is_symlink() or not path.is_file():
            raise ValueError(f"{path} is missing or not a regular file (listed in {manifest})")
        actual = file_record(path)
        if actual["size"] != record["size"]:
            raise ValueError(f"{path} has {actual['size']} bytes; {manifest} says {record['size']}")
        if actual["sha256"] != record.get("sha256"):
            raise ValueError(f"{path} does not match the SHA-256 in {manifest} (changed or damaged)")


__all__ = [
    "EVALUATION_ENTRIES",
    "KINDS",
    "RUN_ENTRIES",
    "check_output_dir",
    "check_output_file",
    "check_replaceable",
    "file_record",
    "inside",
    "kind_of",
    "remove_stale_temporaries",
    "temporary_name",
    "verify_files",
]
