"""Lock files: `recipes/<name>.lock.json` pins the exact scenes (and later chips) of a dataset.

Commit the lock with the recipe. The search stage reads a lock whose ``search.key`` equals its
own cache key instead of querying the catalogue, so a colleague with the recipe and the lock
rebuilds the same dataset with no catalogue request. A lock made from other search settings
is stale and ignored (the search runs and the lock is rewritten). Hrefs are stored unsigned.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from instageo import __version__
from instageo.errors import InputError
from instageo.files import canonical_json, write_json_atomic


class LockedSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str  # the search stage's cache key the lock was made for
    catalogue: str
    items: list[dict[str, Any]]  # STAC items, trimmed to the assets the recipe reads
    candidates: dict[str, list[str]]  # observation id -> item ids
    sha256: str  # of items + candidates: an edited lock is refused, not silently used


class Lock(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: str
    instageo_version: str
    search: LockedSearch | None = None
    chips: dict[str, Any] | None = None


def lock_path(recipe_path: Path, name: str) -> Path:
    return recipe_path.parent / f"{name}.lock.json"


def content_sha256(items: list[dict], candidates: dict[str, list[str]]) -> str:
    return hashlib.sha256(canonical_json([items, candidates]).encode("utf-8")).hexdigest()


def read_lock(path: Path) -> Lock | None:
    if not path.exists():
        return None
    try:
        lock = Lock.model_validate_json(path.read_bytes())
    except (ValidationError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"{path}: not a valid lock file ({first}); delete it or rerun with --refresh-lock") from None
    search = lock.search
    if search is not None and content_sha256(search.items, search.candidates) != search.sha256:
        raise InputError(f"{path}: items were edited by hand (checksum mismatch); "
                         "rerun with --refresh-lock to search again")
    return lock


def update_lock(path: Path, name: str, **sections: Any) -> None:
    """Set sections of the lock (search=..., chips=...), keeping the others; atomic."""
    lock = read_lock(path) or Lock(recipe=name, instageo_version=__version__)
    updated = lock.model_copy(update={**sections, "instageo_version": __version__})
    if path.exists() and json.loads(path.read_text()) == updated.model_dump(mode="json"):
        return
    write_json_atomic(path, updated.model_dump(mode="json"))
