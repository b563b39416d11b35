"""Run chip jobs on a dask.distributed cluster: the same `build_chip`, on many machines.

With no address a LocalCluster on 127.0.0.1 is started for the stage and stopped after it.
Workers write into the stage's folder, so it must be on storage they all see.
"""

from __future__ import annotations

import importlib

from instageo.data.chip_build import ChipJob, ChipRecord, build_chip
from instageo.errors import DataSourceError, InputError


def run_on_dask(jobs: list[ChipJob], out_dir: str, address: str | None, workers: int, ctx) -> list[ChipRecord]:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise InputError("data.executor.kind 'dask' needs dask: pip install 'instageo[dask]'") from None
    cluster = None
    try:
        if address is None:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=4, host="127.0.0.1",
                                   dashboard_address=None, processes=True)
            address = cluster.scheduler_address
        try:
            client = Client(address, timeout="20s")
        except OSError as exc:
            raise DataSourceError(f"dask scheduler {address} is unreachable: {exc}") from None
        with client:
            # import the chip code once per worker before its threads start on jobs:
            # rasterio's extension modules must not be first imported by threads in parallel
            client.run(importlib.import_module, "instageo.data.chip_build")
            futures = client.map(build_chip, jobs, out_dir=out_dir, pure=False)
            records = [future.result() for future in ctx.track(as_completed(futures), total=len(futures),
                                                                 description="chips (dask)")]
    finally:
        if cluster is not None:
            cluster.close()
    return records
