"""An append-only, fsync'd write log whose torn tail is ignored on replay.

Each record is one frame::

    b"LWR1" | length (uint32, little endian) | crc32 of the payload (uint32) | payload

and the payload is strict JSON (a dict). :meth:`WriteLog.append` writes the frame
and ``fsync`` s the file before it returns, so a record that was appended survives
a crash of the process or of the machine. A crash *during* an append leaves a
partial frame at the end of the file (a short header, a short payload, or a
checksum that does not match): :func:`read_records` stops at the first frame that
is not whole and :meth:`WriteLog.open` truncates the file there, as a database's
recovery does with its log, so the next append starts on a clean boundary. Only
writes that were never acknowledged can be in that tail.

Nothing read from the log is unpickled or evaluated: JSON only.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

from likewise.io import fsync_directory

MAGIC = b"LWR1"
_HEADER = struct.Struct("<4sII")
#: largest payload accepted on replay (a larger length field is a torn or damaged frame)
MAX_RECORD = 1 << 30


def encode(record: dict[str, Any]) -> bytes:
    payload = json.dumps(record, allow_nan=False, separators=(",", ":")).encode("utf-8")
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def read_records(path: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """The whole records of the log at ``path`` and the byte offset where they end.

    Reading stops at the first frame that is incomplete or fails its checksum (a torn tail).
    """
    data = Path(path).read_bytes()
    records, pos = [], 0
    while pos + _HEADER.size <= len(data):
        magic, length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if magic != MAGIC or length > MAX_RECORD or end > len(data):
            break
        payload = data[pos + _HEADER.size : end]
        if zlib.crc32(payload) != crc:
            break
        try:
            record = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            break
        if not isinstance(record, dict):
            break
        records.append(record)
        pos = end
    return records, pos


class WriteLog:
    """One log file, opened for appending (:meth:`open` replays and repairs it first)."""

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path, self._fd, self.size = path, fd, size

    @classmethod
    def open(cls, path: str | os.PathLike) -> tuple[WriteLog, list[dict[str, Any]]]:
        """Open (creating) the log at ``path``; returns it and its whole records.

        A torn tail is cut off (the file is truncated after the last whole record).
        """
        path = Path(path)
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            records, end = read_records(path) if not created else ([], 0)
            if os.fstat(fd).st_size != end:
                os.ftruncate(fd, end)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        if created:
            fsync_directory(path.parent)
        return cls(path, fd, end), records

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and ``fsync`` it: durable when this returns."""
        frame = encode(record)
        view = memoryview(frame)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except BaseException:  # no half frame may stay in front of later records
            os.ftruncate(self._fd, self.size)
            raise
        self.size += len(frame)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
