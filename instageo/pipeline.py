"""The stages of the product pipeline, in execution order."""

from __future__ import annotations

from instageo.runner.stage import Stage


def default_pipeline() -> list[Stage]:
    """search -> chips -> teacher -> student -> export -> predict -> viewer (as they land)."""
    from instageo.data import chips, search

    return [
        Stage("search", search.run, version="1", report_into="dataset", after=search.after,
              sections=("data.source", "data.observations", "data.chips.size",
                        "data.chips.resolution", "data.chips.bands", "data.chips.time")),
        Stage("chips", chips.run, version="1", needs=("search",), report_into="dataset",
              after=chips.after, sections=("data.chips", "data.split", "seed", "task")),
    ]
