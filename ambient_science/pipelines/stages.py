"""Where a pipeline's time goes, and running its independent parts side by side (issue #21).

* :func:`timed`: a block's wall and CPU seconds added to a ``stages`` dict (the MRI example writes it to
  ``metrics.json`` under ``"stages"`` and prints it);
* :func:`cpu_seconds` (from :mod:`ambient_science.threads`): CPU time of this process, all its threads, plus its
  finished worker processes;
* :func:`side_by_side`: independent calls in Python threads that share the intra-op threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import torch

from ambient_science.threads import cpu_seconds

__all__ = ["cpu_seconds", "side_by_side", "timed"]


def side_by_side(function: Callable[[Any], Any], items: Sequence[Any], threads: int) -> list[Any]:
    """``[function(item) for item in items]`` in ``min(len(items), threads)`` Python threads that share the
    ``threads`` intra-op threads (at least one each; torch releases the GIL inside its kernels); the intra-op
    thread count is restored afterwards."""
    workers = max(1, min(len(items), threads))
    per_worker = max(1, threads // workers)

    def job(item):
        torch.set_num_threads(per_worker)  # OpenMP's thread count is per calling thread: set it in each worker
        return function(item)

    try:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(job, items))
    finally:
        torch.set_num_threads(threads)


@contextmanager
def timed(stages: dict[str, dict[str, float]], name: str):
    """Add the wall and CPU seconds of the block to ``stages[name]`` (``{"wall_s", "cpu_s", "threads"}``;
    ``threads``: the intra-op threads at its start, e.g. to tell a slow machine from a run that found it busy)."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        entry = stages.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "threads": threads})
        entry["wall_s"] = round(entry["wall_s"] + time.perf_counter() - wall, 1)
        entry["cpu_s"] = round(entry["cpu_s"] + cpu_seconds() - cpu, 1)
