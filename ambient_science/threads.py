"""CPU thread defaults that degrade gracefully on a shared machine: :func:`configure_threads`, :func:`retune`.

Why: PyTorch starts one intra-op thread per core it sees, and its OpenMP threads spin at each barrier while they
wait for the others. When other processes hold most of the cores, every parallel region waits for its slowest
thread, and that thread waits for a time slice. ``python benchmarks/bench_threads.py`` (an ambient training step of
the MRI example's CPU preset, each setting in a fresh process, alternated) on 2 logical CPUs with a load average of
5.4-7.4 from other processes: PyTorch's default 5.85 s per step, ``OMP_WAIT_POLICY=PASSIVE`` 1.81 s, one thread
1.84 s, :func:`configure_threads` 1.76 s. One thread per *free* core, and threads that sleep when idle, avoid it.

Defaults of :func:`configure_threads` (each overridden by an explicit argument or environment variable):

* intra-op threads: ``AMBIENT_SCIENCE_THREADS``, else ``OMP_NUM_THREADS`` when set (the user's choice), else the
  free share of the CPUs this process may use, ``round(cpus · (1 − load / cpu_count))``, at least 1, where ``cpus``
  is the affinity mask capped by a cgroup CPU quota and ``load`` the CPUs that *other* processes keep busy
  (:func:`current_load`: 0.1 s of ``/proc/stat`` less the CPU time of this process and its finished workers, again
  over 0.5 s when that finds half a CPU busy, the smaller kept; time the hypervisor stole is not counted as busy;
  measured once and reused for :data:`LOAD_MAX_AGE` seconds, so a program that asks again does not wait again;
  where there is none, the 1-minute load average, which lags by a minute) over the machine's ``cpu_count``
  logical CPUs (on an idle machine: every usable CPU; on a busy one: 1);
* the automatic choice is revisited while a program runs: :func:`retune` (called by the trainer at every step, a
  clock check in between) re-chooses it from the other processes' CPU use over the last :data:`RETUNE_SECONDS`
  seconds, so a blip at start-up does not keep a whole run on one thread, and a job that starts beside a run
  takes a core from it; an explicit thread count is never changed;
* OpenMP waiting: ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep) when it is unset and torch is not yet imported
  (OpenMP reads it once, when torch loads); :func:`prefer_passive_wait` does that step alone.

    >>> from ambient_science.threads import default_threads
    >>> default_threads(cpus=8, load=0.0, cpu_count=8, env={})
    8
    >>> default_threads(cpus=8, load=6.0, cpu_count=8, env={})
    2
    >>> default_threads(cpus=2, load=7.5, cpu_count=2, env={})
    1
    >>> default_threads(cpus=8, load=6.0, cpu_count=8, env={"OMP_NUM_THREADS": "3"})
    3
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping

__all__ = [
    "LOAD_MAX_AGE",
    "THREADS_ENV",
    "configure_threads",
    "cpu_seconds",
    "current_load",
    "default_threads",
    "describe",
    "prefer_passive_wait",
    "retune",
    "usable_cpus",
]

#: environment variable that fixes the intra-op thread count of :func:`configure_threads`
THREADS_ENV = "AMBIENT_SCIENCE_THREADS"
#: seconds for which :func:`default_threads` reuses its :func:`current_load` measurement
LOAD_MAX_AGE = 10.0
#: seconds of other processes' CPU use over which :func:`retune` re-chooses an automatic thread count
RETUNE_SECONDS = 20.0
_measured: dict[str, float | None] = {}  # {"at": time.monotonic(), "load": CPUs busy}: the last measurement
# the automatic choice of configure_threads: {"cpus", "load", "snapshot": _Snapshot}; empty when the count is fixed
_auto: dict = {}


def _cgroup_quota() -> float | None:
    """CPUs allowed by a cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), None without one."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """Logical CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) CPU-seconds of all CPUs since boot from ``/proc/stat``, None where there is none.

    Busy: user, nice, system, irq, softirq. Idle, iowait and steal (time the hypervisor gave to another machine)
    count in the total only: a stolen tick is not a process of this machine that more threads would contend with.
    """
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 4:
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = fields[0] + fields[1] + fields[2] + sum(fields[5:7])
    return busy / ticks, sum(fields) / ticks


def cpu_seconds() -> float:
    """CPU seconds of this process (every thread) and of its finished, reaped child processes (e.g. the workers of
    a process pool that wrote files before training: their CPU is this program's, not another's)."""
    try:
        import resource
    except ImportError:  # not Unix
        return time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class _Snapshot:
    """The machine's CPU times and this process's own CPU time at one moment."""

    def __init__(self):
        self.at = time.monotonic()
        self.own = cpu_seconds()
        self.times = _cpu_times()

    def others_since(self, earlier: _Snapshot) -> float | None:
        """CPUs kept busy by other processes between ``earlier`` and this snapshot (None without ``/proc/stat``)."""
        if self.times is None or earlier.times is None or self.times[1] <= earlier.times[1]:
            return None
        busy = self.times[0] - earlier.times[0] - (self.own - earlier.own)
        return max(0.0, busy) / (self.times[1] - earlier.times[1]) * (os.cpu_count() or 1)


def current_load(interval: float = 0.1) -> float | None:
    """CPUs busy with other processes right now, averaged over ``interval`` seconds (``/proc/stat`` less this
    process's own CPU time; None where there is none).

    Unlike the 1-minute load average it does not still count a job that ended a minute ago (a run of the MRI
    example started just after another job took one thread of two because of that), nor miss one that just started.
    0.1 s is 10 ticks of the kernel's 100 Hz clock per CPU: the load to about 0.1 CPU, enough to count free cores.
    """
    first = _Snapshot()
    time.sleep(interval)
    return _Snapshot().others_since(first)


def _env_threads(env: Mapping[str, str]) -> int | None:
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = env.get(name)
        if value:
            try:
                n = int(value)
            except ValueError:
                raise ValueError(f"{name}={value!r}: expected a positive integer number of threads") from None
            if n < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer number of threads")
            return n
    return None


def default_threads(
    *,
    cpus: int | None = None,
    load: float | None = None,
    cpu_count: int | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Intra-op threads for this process now (module docstring): the environment's choice, else the free CPUs.

    Args:
        cpus: usable CPUs (default :func:`usable_cpus`).
        load: CPUs busy on the machine (default :func:`current_load`, reused for :data:`LOAD_MAX_AGE` seconds,
            else the 1-minute load average, else 0).
        cpu_count: the machine's logical CPUs, over which ``load`` is counted (default ``os.cpu_count()``).
        env: the environment to read ``AMBIENT_SCIENCE_THREADS`` / ``OMP_NUM_THREADS`` from (default ``os.environ``).
    """
    chosen = _env_threads(os.environ if env is None else env)
    if chosen is not None:
        return chosen
    cpus = usable_cpus() if cpus is None else max(1, int(cpus))
    if load is None:
        load = _recent_load()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    cpu_count = max(1, int(cpu_count or os.cpu_count() or cpus))
    busy = min(1.0, max(0.0, float(load)) / cpu_count)
    return max(1, min(cpus, math.floor(cpus * (1.0 - busy) + 0.5)))


def _recent_load() -> float | None:
    """:func:`current_load`, measured at most once per :data:`LOAD_MAX_AGE` seconds in a process; a load of half a
    CPU or more is measured again over 0.5 s and the smaller kept, so that a blip does not take a core away."""
    now = time.monotonic()
    if not _measured or now - float(_measured["at"]) > LOAD_MAX_AGE:
        load = current_load()
        if load is not None and load >= 0.5:
            again = current_load(0.5)
            load = load if again is None else min(load, again)
        _measured.update(at=now, load=load)
    return _measured["load"]


def prefer_passive_wait() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it is set or torch is already imported; True when it took effect.

    OpenMP reads the policy once, when torch loads, so call this first thing (before ``import torch``).
    """
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def configure_threads(threads: int | None = None, *, passive_wait: bool = True) -> int:
    """Set PyTorch's intra-op threads to ``threads`` (default :func:`default_threads`); returns the number set.

    With ``passive_wait`` it first calls :func:`prefer_passive_wait` (effective only before torch is imported).
    Call it once at the start of a program, before heavy work. An automatic choice (no ``threads``, no
    ``AMBIENT_SCIENCE_THREADS`` / ``OMP_NUM_THREADS``) is then revisited by :func:`retune`.
    """
    if passive_wait:
        prefer_passive_wait()
    _auto.clear()
    if threads is None and _env_threads(os.environ) is None:  # automatic: the CPUs and load measured once, kept
        _auto.update(cpus=usable_cpus(), load=_recent_load(), snapshot=_Snapshot())
        n = default_threads(cpus=_auto["cpus"], load=_auto["load"], env={})
    else:
        n = default_threads() if threads is None else int(threads)
    if n < 1:
        raise ValueError(f"configure_threads: threads must be >= 1, got {threads}")
    # torch loads here, after the OpenMP policy above: the one place this module needs it
    import torch

    torch.set_num_threads(n)
    return n


def retune(every: float = RETUNE_SECONDS) -> int | None:
    """Re-choose an automatic thread count (:func:`configure_threads` without a count) from the CPUs other
    processes kept busy since the last re-choice, once at least ``every`` seconds have passed; returns the new
    count when it changed, else None. A no-op (a clock check) otherwise, and for a count the user fixed."""
    if not _auto or time.monotonic() - _auto["snapshot"].at < every:
        return None
    now = _Snapshot()
    load = now.others_since(_auto["snapshot"])
    _auto.update(snapshot=now, load=load)
    if load is None:
        return None
    import torch

    n = default_threads(cpus=_auto["cpus"], load=load, env={})
    if n == torch.get_num_threads():
        return None
    torch.set_num_threads(n)
    return n


def describe() -> str:
    """One line on the intra-op threads in use and why (for a program's log)."""
    import torch

    n = torch.get_num_threads()
    if not _auto:
        fixed = [f"{k}={os.environ[k]}" for k in (THREADS_ENV, "OMP_NUM_THREADS") if os.environ.get(k)]
        cpus = usable_cpus()
        line = f"{n} intra-op thread(s) of {cpus} usable CPU(s), fixed" + (f" ({fixed[0]})" if fixed else "")
        if n < cpus:  # e.g. an OMP_NUM_THREADS=1 exported for other jobs: say what it costs
            line += "; on an idle machine unset it (or set AMBIENT_SCIENCE_THREADS) to use every core"
        return line
    load = _auto.get("load")
    busy = "unknown" if load is None else f"{load:.1f}"
    return (f"{n} intra-op thread(s), automatic: {_auto['cpus']} usable CPU(s), {busy} busy with other processes "
            f"(re-chosen every {RETUNE_SECONDS:.0f} s; AMBIENT_SCIENCE_THREADS=N fixes it)")  # fmt: skip
