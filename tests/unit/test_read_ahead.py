"""The prediction loop's reading ahead (engine/loop.py): tiles come back in order whether read
in the caller's thread or on threads, runs never cross a tile row, and the tiles read but not
yet handed over stay within the depth asked for (or READ_AHEAD_BYTES, with runs of tiles)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from instageo.engine import loop
from tests.unit.test_row_stacks import row_jobs


@pytest.fixture
def jobs(tmp_path):
    """Three tile rows of real HLS tiles (10 a row), row-major as a prediction's."""
    jobs = []
    for row in (0, 60, 120):
        (tmp_path / str(row)).mkdir()
        jobs += row_jobs(tmp_path / str(row), row, 0.05, "each")
    return jobs


def test_runs_stay_in_their_tile_row_and_hold_at_most_run_tiles(jobs, monkeypatch):
    monkeypatch.setattr(loop, "RUN_TILES", 4)
    runs = loop.tile_runs(jobs)
    assert [len(run) for run in runs] == [4, 4, 2] * 3
    assert all(len({job.grid.transform[5] for job in run}) == 1 for run in runs)
    assert [job for run in runs for job in run] == jobs


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_tiles_come_back_in_order_and_few_are_read_ahead(jobs, monkeypatch, threads):
    monkeypatch.setattr(loop, "RUN_TILES", 4)
    monkeypatch.setattr(loop, "READ_AHEAD_BYTES", 0)  # the depth alone bounds it (one unit per thread at least)
    lock, read, handed, most_ahead = threading.Lock(), [0], [0], [0]

    def prepare(job, stack):
        with lock:
            read[0] += 1
            most_ahead[0] = max(most_ahead[0], read[0] - handed[0])
        return job.chip_id, stack

    out = []
    with ThreadPoolExecutor(max(threads, 1)) as pool:
        for job, (name, _) in loop.read_ahead(pool, jobs, prepare, depth=5, threads=threads):
            with lock:
                handed[0] += 1
            out.append((job.chip_id, name))
            time.sleep(0.005)  # a slow model: reading would run ahead if nothing held it
    assert [a for a, _ in out] == [job.chip_id for job in jobs] and all(a == b for a, b in out)
    # read in the caller's thread: one run at most; on threads: the depth, or a run per thread and one more
    assert most_ahead[0] <= (4 if threads == 0 else max(5, 4 * (threads + 1)) + 4), most_ahead[0]
