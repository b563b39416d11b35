"""One run in several processes: `accelerate launch --num_processes N -m instageo RECIPE`.

Rank 0 runs the run as a single process would: it holds the lock, plans, runs and commits
every stage, writes the log and the report. The other ranks plan the same stages (after
rank 0 has planned, so they see the same cache) and join only the stages that train
(``Stage.ranks``), as data-parallel replicas (accelerate wraps the model in DDP); for every
other stage they wait for rank 0 and read what it committed. They write nothing. When any
process fails, the launcher stops the others.

Ranks come from the launcher's environment (WORLD_SIZE, RANK), so one process never imports
torch for this.
"""

from __future__ import annotations

import datetime as dt
import functools
import os

# a follower waits at a barrier while rank 0 runs a stage alone (chips, prediction): hours
WAIT = dt.timedelta(hours=72)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process writes: rank 0 (or the only process)."""
    return rank() == 0


def sync() -> None:
    """Wait until every process of the run is here (nothing with one process)."""
    if world_size() > 1:
        import torch.distributed

        _process_group()
        torch.distributed.barrier()


@functools.cache
def _process_group():
    """accelerate's process state, made first so that its process group waits as long as
    rank 0's longest stage (torch's default gives up after 30 minutes)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available(), timeout=WAIT)
