"""The stages of the product pipeline, in execution order."""

from __future__ import annotations

from instageo.runner.stage import Stage


def default_pipeline() -> list[Stage]:
    """search -> chips -> teacher -> student -> export -> predict -> viewer (as they land)."""
    return []
