"""Files: all-or-nothing writes (a rerun after a kill never sees half a file) and hashing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TEMPORARY = ".*.tmp*"  # how the temporaries of all-or-nothing writes are named: .<name>.tmp-<pid>


def write_bytes_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to a sibling temporary file, flush it to disk, then rename over ``path``.
    ``durable=False`` skips the fsyncs (still all or nothing for a reader after a kill)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # (a read-only folder) the write's own error, if any, is the one to report
    if durable:
        fsync_dir(path.parent)


def remove_temporaries(folder: Path, recursive: bool = True, pattern: str = TEMPORARY) -> list[Path]:
    """Delete the temporaries that writers killed mid-write left in (or under) ``folder`` (a
    kill skips their clean-up); returns them. ``pattern`` narrows them (e.g. in a folder of
    the user's, to our own)."""
    found = Path(folder).rglob(pattern) if recursive else Path(folder).glob(pattern)
    leftovers = [p for p in sorted(found) if p.is_file()]
    for path in leftovers:
        path.unlink()
    return leftovers


def write_json_atomic(path: Path, value: Any, indent: int | None = 2) -> None:
    text = json.dumps(value, indent=indent, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces. What cache keys are hashed from."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
