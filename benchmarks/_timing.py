"""Timing helpers shared by the benchmarks: warm-up, alternated repeats, paired ratios, peak memory, machine.

Method (every benchmark): each side is called ``warmup`` times, then ``repeats`` rounds time every side
once, in alternating order (A B, B A, A B, ...), each timing a block of ``number`` calls sized by
:func:`calibrate`. A speed ratio is the median over rounds of the per-round ratio, so a shared, busy
machine slows numerator and denominator alike; its interquartile range is reported with it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata

import torch

__all__ = [
    "Comparison",
    "PeakMemory",
    "calibrate",
    "compare",
    "ensure_thread_env",
    "importable",
    "interpreter_label",
    "machine_info",
    "quartiles",
    "sync",
    "timed",
]


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def ensure_thread_env(argv: list[str] | None = None) -> int:
    """Pin the BLAS / OpenMP thread pools to ``--threads`` (default 1) of ``argv``; returns that number.

    numpy's OpenBLAS reads its thread count once, when it loads, so when the environment does not already
    say ``--threads`` this re-executes the script with ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and
    ``OPENBLAS_NUM_THREADS`` set (call it first thing under ``if __name__ == "__main__"``). Without it,
    ehtim's small matrix products on a busy 2-core machine ran 400× slower than with one thread.
    """
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--threads", type=int, default=1)
    threads = p.parse_known_args(argv)[0].threads
    if threads < 1:
        raise SystemExit("--threads must be >= 1")
    if all(os.environ.get(k) == str(threads) for k in THREAD_VARS):
        return threads
    env = {**os.environ, **{k: str(threads) for k in THREAD_VARS}}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, sys.argv[0], *argv], env)
    return threads  # pragma: no cover - execve does not return


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device | str = "cpu", number: int = 1) -> float:
    """Seconds per call of ``fn``, averaged over a block of ``number`` calls."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / number


def calibrate(fn: Callable[[], object], min_time: float, device: torch.device | str = "cpu", cap: int = 1000) -> int:
    """Calls per timed block so that a block lasts at least ``min_time`` seconds (one call if it already does)."""
    t = timed(fn, device)
    return max(1, min(cap, int(min_time / max(t, 1e-9)) + 1)) if t < min_time else 1


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """``(q1, median, q3)`` of ``values`` (all three equal for one value)."""
    if len(values) < 2:
        return (values[0],) * 3
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


@dataclass
class Comparison:
    """Per-round seconds of each side of an alternated comparison."""

    times: dict[str, list[float]] = field(default_factory=dict)
    number: dict[str, int] = field(default_factory=dict)

    def median(self, name: str) -> float:
        """Median seconds per call of ``name``."""
        return statistics.median(self.times[name])

    def ratio(self, num: str, den: str) -> tuple[float, float, float]:
        """``(q1, median, q3)`` over rounds of ``time(num) / time(den)`` (same round: a paired ratio)."""
        return quartiles([a / b for a, b in zip(self.times[num], self.times[den])])


def compare(
    fns: dict[str, Callable[[], object]],
    *,
    repeats: int = 7,
    warmup: int = 2,
    min_time: float = 0.05,
    device: torch.device | str = "cpu",
) -> Comparison:
    """Time every function of ``fns`` in alternated rounds (module docstring); returns per-round seconds per call."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    number = {name: calibrate(fn, min_time, device) for name, fn in fns.items()}
    out = Comparison({name: [] for name in fns}, number)
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            out.times[name].append(timed(fns[name], device, number[name]))
    return out


class PeakMemory:
    """Peak memory of a block, in MiB above what was in use when it started.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the process's peak resident set (``VmHWM``), reset at the
    start by writing 5 to ``/proc/self/clear_refs`` (Linux); where that is not possible, the lifetime peak
    ``ru_maxrss`` minus the resident set at the start (an upper bound). ``method`` says which was used.

        >>> with PeakMemory("cpu") as mem:
        ...     _ = bytearray(1)
        >>> mem.mib >= 0.0
        True
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.mib = float("nan")
        self.method = ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return self
        _release_free_memory()
        self._base = _status_kib("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "peak RSS (VmHWM, reset)"
        except OSError:
            self.method = "ru_maxrss - RSS at start (upper bound)"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self.method.startswith("peak RSS"):
            self.mib = max(0.0, (_status_kib("VmHWM") - self._base) / 1024)
        else:
            self.mib = max(0.0, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._base) / 1024)


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so that a block's peak
    resident set counts what it allocates rather than reusing pages freed earlier but still held."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _status_kib(key: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` (0 where there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        yield


def machine_info() -> dict:
    """The machine and software a run measured: CPU, cores, load, versions, thread settings, GPU."""
    import numpy as np

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    info = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": cores,
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "interpreter": interpreter_label(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkl": torch.backends.mkl.is_available(),
        "env_threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        "optional": {d: _version(d) for d in ("sigpy", "torchkbnufft", "ehtim")},
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    with contextlib.suppress(OSError):
        with open("/proc/meminfo") as f:
            info["memory_gib"] = round(float(f.readline().split()[1]) / 2**20, 1)
    return info


def interpreter_label() -> str:
    """The interpreter without a machine-specific path: ``python`` when it is the one on PATH, else its file name
    and whether it is a virtual environment (e.g. ``python3.11 (virtual environment)``)."""
    import shutil
    from pathlib import Path

    on_path = shutil.which("python")
    if on_path and Path(on_path).resolve() == Path(sys.executable).resolve():
        return "python"
    name = Path(sys.executable).name or "python"
    return f"{name} (virtual environment)" if sys.prefix != sys.base_prefix else name


def importable(module: str) -> bool:
    """Whether ``module`` imports (its import-time banner, if any, silenced); the import is then cached."""
    try:
        with _quiet():
            __import__(module)
    except Exception:
        return False
    return True
