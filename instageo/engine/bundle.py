"""A bundle as prediction reads it: bundle.json, checked against its schema (``outputs.Bundle``)
and its format, so an old or edited bundle stops with one line naming the file and field.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from instageo.errors import InputError
from instageo.outputs import BUNDLE_FORMAT, Bundle


def read_bundle(folder: Path) -> dict:
    """bundle.json of a bundle folder, checked against its schema (``outputs.Bundle``)."""
    path = folder / "bundle.json"
    try:
        bundle = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the bundle ({exc}); give an export stage's bundle/ folder") from None
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        found = bundle.get("format") if isinstance(bundle, dict) else None
        raise InputError(f"{path}: format {found!r}, not {BUNDLE_FORMAT!r}; re-export it with this instageo")
    try:
        Bundle.model_validate(bundle)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "bundle"
        said = "missing" if first["type"] == "missing" else first["msg"]
        raise InputError(f"{path}: {where}: {said}; re-export the bundle rather than edit it") from None
    return bundle
