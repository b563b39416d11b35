"""The stage cache on disk: one folder per computed stage, committed atomically.

    runs/<recipe>/stages/<stage>-<key12>/            complete: has a valid manifest.json
    runs/<recipe>/stages/.partial-<stage>-<key12>/   in progress (kept after a kill to resume)

A stage writes into its partial folder; only when it succeeds does the manifest go in and
the folder get renamed to its final name (a rename is atomic on one file system). The
manifest records every file of the folder with its size, mtime and SHA-256. A final folder
whose manifest is unreadable or of another key, or whose files no longer match it, is a
miss, with a warning naming the file, and is replaced when the stage runs again. Matching is
cheap in the common case (as dvc does it): size and mtime first, the hash only when the
mtime differs (a copy, a touch).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from instageo.files import fsync_dir, remove_temporaries, sha256_file, write_json_atomic
from instageo.errors import RunLockedError
from instageo.runner.stage import StageResult

log = logging.getLogger("instageo")

MANIFEST = "manifest.json"


class FileSum(BaseModel):
    """What a stage wrote into one file, to tell later whether it still holds that."""

    model_config = ConfigDict(extra="forbid")

    size: int
    mtime_ns: int
    sha256: str


def file_sums(folder: Path) -> dict[str, FileSum]:
    """Every file under ``folder`` (the manifest aside), by path relative to it."""
    sums = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            stat = path.stat()
            sums[path.relative_to(folder).as_posix()] = FileSum(
                size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=sha256_file(path))
    return sums


def first_mismatch(folder: Path, sums: dict[str, FileSum]) -> str | None:
    """Why the files under ``folder`` are not the ones ``sums`` recorded, or None if they are."""
    for name, expected in sums.items():
        try:
            stat = (folder / name).stat()
        except OSError:
            return f"output {name} missing"
        if stat.st_size != expected.size:
            return f"output {name} changed ({stat.st_size} bytes, {expected.size} written)"
        if stat.st_mtime_ns != expected.mtime_ns and sha256_file(folder / name) != expected.sha256:
            return f"output {name} changed since the stage wrote it (checksum differs)"
    return None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    key: str
    version: str
    config: dict[str, Any]
    inputs: dict[str, str]
    files: dict[str, str]
    checksums: dict[str, FileSum] = {}  # filled in by RunStore.commit
    summary: dict[str, Any]
    variants: list[str]
    started: str
    seconds: float
    instageo_version: str


class RunStore:
    """The cache of one recipe's runs folder."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.stages_dir = self.run_dir / "stages"
        self._latest_path = self.run_dir / "latest.json"

    def final_dir(self, name: str, key: str) -> Path:
        return self.stages_dir / f"{name}-{key[:12]}"

    def partial_dir(self, name: str, key: str) -> Path:
        return self.stages_dir / f".partial-{name}-{key[:12]}"

    def lookup(self, name: str, key: str) -> tuple[dict | None, str | None]:
        folder = self.final_dir(name, key)
        if not folder.exists():
            return None, None
        try:
            manifest = Manifest.model_validate_json((folder / MANIFEST).read_bytes())
        except (OSError, ValidationError):
            return self._corrupt(folder, "manifest.json missing or unreadable")
        if manifest.key != key:
            return self._corrupt(folder, f"manifest is for key {manifest.key[:12]}")
        missing = [f for f in manifest.files.values() if f not in manifest.checksums]
        if missing:
            return self._corrupt(folder, f"output {missing[0]} has no checksum")
        mismatch = first_mismatch(folder, manifest.checksums)
        if mismatch:
            return self._corrupt(folder, mismatch)
        return manifest.model_dump(), None

    def entries(self) -> list[Path]:
        """The complete-looking stage folders of this runs folder (manifests not checked)."""
        if not self.stages_dir.is_dir():
            return []
        return sorted(p for p in self.stages_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def check(self, folder: Path) -> str | None:
        """Why the stage folder no longer holds what its stage wrote, or None if it does."""
        try:
            manifest = Manifest.model_validate_json((folder / MANIFEST).read_bytes())
        except (OSError, ValidationError):
            return "manifest.json missing or unreadable"
        return first_mismatch(folder, manifest.checksums)

    def _corrupt(self, folder: Path, why: str) -> tuple[None, str]:
        log.warning("cache entry %s is corrupt (%s); it will be recomputed", folder, why)
        return None, f"cache entry corrupt: {why}"

    def result(self, manifest: dict) -> StageResult:
        folder = self.final_dir(manifest["stage"], manifest["key"])
        return StageResult(manifest["stage"], manifest["key"], folder, manifest["files"], manifest["summary"])

    def begin(self, name: str, key: str) -> Path:
        """The partial folder to write into; an earlier attempt's files are kept for resuming."""
        folder = self.partial_dir(name, key)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def commit(self, manifest: Manifest) -> Path:
        partial = self.partial_dir(manifest.stage, manifest.key)
        final = self.final_dir(manifest.stage, manifest.key)
        # half-written temporaries of an earlier, killed attempt are not part of the stage
        for leftover in remove_temporaries(partial):
            log.debug("removed %s, left by an interrupted write", leftover)
        missing = [f for f in manifest.files.values() if not (partial / f).exists()]
        if missing:
            raise FileNotFoundError(f"stage {manifest.stage} reported {missing[0]} but did not write it")
        manifest = manifest.model_copy(update={"checksums": file_sums(partial)})
        write_json_atomic(partial / MANIFEST, manifest.model_dump(mode="json"))
        if final.exists():  # a corrupt entry found at lookup: move it out of the way first
            trash = self.stages_dir / f".trash-{final.name}-{os.getpid()}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(partial, final)
        fsync_dir(self.stages_dir)
        return final

    def previous(self, name: str, variant: str) -> dict | None:
        """Manifest of the last run of this stage for this variant (else for any variant)."""
        by_variant = self._read_latest().get(name, {})
        key = by_variant.get(variant) or next(reversed(by_variant.values()), None)
        if key is None:
            return None
        try:
            return json.loads((self.final_dir(name, key) / MANIFEST).read_text())
        except (OSError, ValueError):
            return None

    def record_latest(self, name: str, variants: list[str], key: str) -> None:
        latest = self._read_latest()
        by_variant = latest.setdefault(name, {})
        for variant in variants:
            by_variant.pop(variant, None)  # re-insert so the newest is last
            by_variant[variant] = key
        write_json_atomic(self._latest_path, latest)

    def _read_latest(self) -> dict[str, dict[str, str]]:
        try:
            return json.loads(self._latest_path.read_text())
        except (OSError, ValueError):
            return {}


class RunLock:
    """An exclusive lock on a runs folder, so two runs never write the same stages."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self._handle = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunLockedError(
                f"{self.path.parent} is in use by another instarun (pid {holder}); "
                "wait for it to finish, or use another --runs-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
