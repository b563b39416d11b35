"""Run jobs on a dask.distributed cluster: the same function, on many machines.

With no address a LocalCluster on 127.0.0.1 is started for the stage and stopped after it.
Workers write into the stage's folder, so it must be on storage they all see. The chips
stage runs `build_chip` per chip this way, the predict stage `blocks.predict_block` per
block of tiles.
"""

from __future__ import annotations

import importlib

from instageo.data.chip_build import ChipJob, ChipRecord, build_chip
from instageo.errors import DataSourceError, InputError


def run_chips_on_dask(jobs: list[ChipJob], out_dir: str, address: str | None, workers: int, ctx) -> list[ChipRecord]:
    return run_on_dask(build_chip, jobs, {"out_dir": out_dir}, address, workers, ctx.track, description="chips (dask)",
                       threads_per_worker=4, preload="instageo.data.chip_build")


def run_on_dask(function, jobs: list, kwargs: dict, address: str | None, workers: int, track, description: str,
                threads_per_worker: int, preload: str) -> list:
    """``function(job, **kwargs)`` for every job, results in completion order. ``preload``: the
    module each worker imports before its threads start on jobs (rasterio's extension
    modules must not be first imported by threads in parallel)."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise InputError("executor kind 'dask' needs dask: pip install 'instageo[dask]'") from None
    cluster = None
    try:
        if address is None:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, host="127.0.0.1",
                                   dashboard_address=None, processes=True)
            address = cluster.scheduler_address
        try:
            client = Client(address, timeout="20s")
        except OSError as exc:
            raise DataSourceError(f"dask scheduler {address} is unreachable: {exc}") from None
        with client:
            client.run(importlib.import_module, preload)
            futures = client.map(function, jobs, **kwargs, pure=False)
            results = [future.result() for future in track(as_completed(futures), total=len(futures),
                                                                 description=description)]
    finally:
        if cluster is not None:
            cluster.close()
    return results
