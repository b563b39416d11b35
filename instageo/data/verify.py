"""`instarun verify`: rebuild a recipe's chips from its lock file and compare checksums, and
check every stage folder of the runs folder against its manifest.

The rebuild runs in a temporary runs folder, reads its scenes from the lock (no catalogue
query) and leaves the lock untouched; every chip must come out byte-identical. Each stage
folder already in the runs folder must still hold the files its stage wrote (the manifest's
sizes and SHA-256s).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from instageo.data.chips import read_index
from instageo.data.lock import lock_path, read_lock
from instageo.errors import InputError
from instageo.files import sha256_file
from instageo.recipe.models import Recipe
from instageo.runner import plan_recipe, run_recipe
from instageo.runner.cache import RunStore
from instageo.runner.stage import Stage


@dataclass
class Verification:
    identical: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # pinned, but not rebuilt
    extra: list[str] = field(default_factory=list)  # rebuilt, but not pinned
    altered: list[str] = field(default_factory=list)  # chips in the runs folder that changed
    stages: dict[str, str | None] = field(default_factory=dict)  # stage folder -> why altered

    @property
    def damaged(self) -> dict[str, str]:
        return {folder: why for folder, why in self.stages.items() if why}

    @property
    def ok(self) -> bool:
        return not (self.differing or self.missing or self.extra or self.altered or self.damaged)


def verify(recipe: Recipe, pipeline: Sequence[Stage], runs_dir: Path | None = None,
           progress=None) -> Verification:
    """Rebuild and compare; also check the chips already in ``runs_dir`` against the lock."""
    path = lock_path(recipe.path, recipe.name)
    lock = read_lock(path)
    if lock is None or lock.search is None or lock.chips is None:
        raise InputError(f"{path}: no lock with chips to verify; run the recipe first")
    with tempfile.TemporaryDirectory(prefix="instageo-verify-") as folder:
        plan, _ = plan_recipe(recipe, pipeline, Path(folder), until="chips")
        keys = plan.keys[plan.variants[0].name]
        pinned_keys = {"search": lock.search.key, "chips": lock.chips.get("key")}
        for stage, key in pinned_keys.items():
            if keys[stage] != key:
                raise InputError(f"{path}: made for other {stage} settings than the recipe's; "
                                 "rerun the recipe to refresh the lock, then verify")
        report = run_recipe(recipe, pipeline, Path(folder), until="chips", progress=progress, publish=False)
        chips = next(s for s in report["stages"] if s["name"] == "chips")
        rows = read_index(Path(folder) / recipe.name / chips["outputs"]["index"])
    rebuilt = {row["chip_id"]: [row["image_sha256"], row["label_sha256"]] for row in rows}
    pinned = lock.chips["checksums"]
    result = Verification()
    for chip_id, sums in sorted(pinned.items()):
        if chip_id not in rebuilt:
            result.missing.append(chip_id)
        elif rebuilt[chip_id] == sums:
            result.identical.append(chip_id)
        else:
            result.differing.append(chip_id)
    result.extra = sorted(set(rebuilt) - set(pinned))
    if runs_dir is not None:
        store = RunStore(Path(runs_dir) / recipe.name)
        result.altered = _altered_on_disk(store, lock.chips["key"], pinned)
        result.stages = {str(folder): store.check(folder) for folder in store.entries()}
    return result


def _altered_on_disk(store: RunStore, key: str, pinned: dict[str, list[str]]) -> list[str]:
    folder = store.final_dir("chips", key)
    if not (folder / "index.csv").exists():
        return []
    altered = []
    for row in read_index(folder / "index.csv"):
        for column in ("image", "label"):
            path = folder / row[column]
            expected = pinned.get(row["chip_id"], [None, None])[column == "label"]
            if not path.exists() or sha256_file(path) != expected:
                altered.append(str(path))
    return altered
