"""Lock files: `recipes/<name>.lock.json` pins the exact scenes (and later chips) of a dataset.

Commit the lock with the recipe. The search stage reads a lock whose ``search.key`` equals its
own cache key instead of querying the catalogue, so a colleague with the recipe and the lock
rebuilds the same dataset with no catalogue request. A lock made from other search settings
is stale and ignored (the search runs and the lock is rewritten). Hrefs are stored unsigned.

Only the recipe as committed writes the lock beside it: a run with ``--set`` on a ``data.``
field (another dataset than the recipe's) pins its scenes in ``runs/<recipe>/<name>.lock.json``
instead, so one-off runs never rewrite the shared lock.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from instageo import __version__
from instageo.errors import InputError
from instageo.files import canonical_json, write_json_atomic


class LockedSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str  # the search stage's cache key the lock was made for
    catalogue: str
    items: list[dict[str, Any]]  # STAC items, trimmed to the assets the recipe reads
    sha256: str  # of the items: an edited lock is refused, not silently used
    # Which items serve which observation is not stored: the search recomputes it from these
    # items (a pure function of them and the recipe); 100k observations made the lock 150 MB.
    # Locks written before that carry it (and their checksum covers it); it is not used.
    candidates: dict[str, list[str]] | None = Field(default=None, exclude=True)


class Lock(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: str
    instageo_version: str
    search: LockedSearch | None = None
    chips: dict[str, Any] | None = None


def lock_path(recipe_path: Path, name: str) -> Path:
    return recipe_path.parent / f"{name}.lock.json"


def lock_for(recipe, run_dir: Path) -> Path | None:
    """The lock this run reads and writes: the recipe's own, or, when --set changed its data,
    one in the run folder."""
    if recipe.path is None:
        return None
    if any(key == "data" or key.startswith("data.") for key in recipe._overrides):
        return Path(run_dir) / f"{recipe.name}.lock.json"
    return lock_path(recipe.path, recipe.name)


def content_sha256(items: list[dict], candidates: dict | None = None) -> str:
    content = items if candidates is None else [items, candidates]
    return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()


def read_lock(path: Path) -> Lock | None:
    if path.is_dir():
        raise InputError(f"{path}: the lock file's place is a folder; move it away")
    if not path.exists():
        return None
    try:
        lock = Lock.model_validate_json(path.read_bytes())
    except (ValidationError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"{path}: not a valid lock file ({first}); rerun with --force search to "
                         "search again and rewrite it") from None
    search = lock.search
    if search is not None and content_sha256(search.items, search.candidates) != search.sha256:
        raise InputError(f"{path}: items were edited by hand (checksum mismatch); "
                         "rerun with --force search to search again and rewrite it")
    return lock


def update_lock(path: Path, name: str, replace_bad: bool = False, **sections: Any) -> None:
    """Set sections of the lock (search=..., chips=...), keeping the others; atomic. With
    ``replace_bad`` (a forced search), an unreadable or edited lock is replaced."""
    try:
        lock = read_lock(path)
    except InputError:
        if not replace_bad or path.is_dir():
            raise
        lock = None
    unchanged = lock is not None and all(getattr(lock, k) == v for k, v in sections.items()) \
        and lock.instageo_version == __version__
    if unchanged:
        return
    lock = lock or Lock(recipe=name, instageo_version=__version__)
    updated = lock.model_copy(update={**sections, "instageo_version": __version__})
    write_json_atomic(path, updated.model_dump(mode="json"))
