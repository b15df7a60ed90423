"""Thread defaults: the free share of the usable CPUs, the environment's choice first, passive OpenMP waiting."""

import os

import pytest
import torch

from ambient_science import threads
from ambient_science.threads import configure_threads, default_threads, prefer_passive_wait, usable_cpus


@pytest.mark.parametrize(
    ("cpus", "load", "cpu_count", "expected"),
    [
        (8, 0.0, 8, 8),  # idle: every usable CPU
        (8, 6.0, 8, 2),  # six CPUs busy: the two free ones
        (2, 7.5, 2, 1),  # overloaded: one thread, never zero
        (4, 16.0, 64, 3),  # a 4-CPU container on a 64-CPU host, a quarter busy
        (1, 0.0, 1, 1),
    ],
)
def test_default_threads_is_the_free_share(cpus, load, cpu_count, expected):
    assert default_threads(cpus=cpus, load=load, cpu_count=cpu_count, env={}) == expected


def test_environment_wins_and_is_checked():
    assert default_threads(cpus=8, load=8.0, cpu_count=8, env={"AMBIENT_SCIENCE_THREADS": "5"}) == 5
    assert default_threads(cpus=8, load=8.0, cpu_count=8, env={"OMP_NUM_THREADS": "3"}) == 3
    both = {"AMBIENT_SCIENCE_THREADS": "2", "OMP_NUM_THREADS": "6"}
    assert default_threads(cpus=8, load=0.0, cpu_count=8, env=both) == 2
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match="AMBIENT_SCIENCE_THREADS"):
            default_threads(env={"AMBIENT_SCIENCE_THREADS": bad})


def test_usable_cpus_and_defaults_are_positive():
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)
    assert default_threads() >= 1


def test_passive_wait_only_before_torch_loads(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert prefer_passive_wait() is False  # torch is imported in this process: too late, nothing set
    assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setattr(threads, "sys", type("S", (), {"modules": {}})())
    assert prefer_passive_wait() is True and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert prefer_passive_wait() is False and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_configure_threads_sets_torch():
    old = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads must be >= 1"):
            configure_threads(0)
    finally:
        torch.set_num_threads(old)


def test_current_load_is_the_busy_cpus_now_or_none():
    from ambient_science.threads import current_load

    load = current_load(interval=0.05)
    assert load is None or 0.0 <= load <= (os.cpu_count() or 1) + 1e-6


def test_default_threads_uses_the_current_load_when_none_is_given(monkeypatch):
    import ambient_science.threads as threads

    monkeypatch.setattr(threads, "_measured", {})  # no measurement reused from earlier tests
    monkeypatch.setattr(threads, "current_load", lambda interval=0.1: 2.0)  # two of four CPUs busy now
    assert threads.default_threads(cpus=4, cpu_count=4, env={}) == 2
    monkeypatch.setattr(threads, "_measured", {})
    monkeypatch.setattr(threads, "current_load", lambda interval=0.1: None)  # no /proc/stat: the load average
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert threads.default_threads(cpus=4, cpu_count=4, env={}) == 4


def test_default_threads_measures_the_load_once_per_max_age(monkeypatch):
    """The 0.1 s /proc/stat measurement is taken once and reused for LOAD_MAX_AGE seconds, then taken anew."""
    import ambient_science.threads as threads

    calls = []
    clock = [100.0]
    monkeypatch.setattr(threads, "_measured", {})
    monkeypatch.setattr(threads, "current_load", lambda interval=0.1: calls.append(interval) or 1.0)
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    assert threads.default_threads(cpus=2, cpu_count=2, env={}) == 1
    assert calls == [0.1, 0.5]  # a busy CPU is measured again, over longer
    clock[0] += threads.LOAD_MAX_AGE / 2
    assert threads.default_threads(cpus=2, cpu_count=2, env={}) == 1
    assert len(calls) == 2
    clock[0] += threads.LOAD_MAX_AGE
    threads.default_threads(cpus=2, cpu_count=2, env={})
    assert len(calls) == 4
    assert threads.default_threads(cpus=2, load=0.0, cpu_count=2, env={}) == 2  # an explicit load measures nothing
    assert len(calls) == 4


def test_a_blip_at_start_up_takes_no_core(monkeypatch):
    """0.1 s that find a CPU busy, then 0.5 s that find none: the smaller load counts (every CPU is used)."""
    monkeypatch.setattr(threads, "_measured", {})
    monkeypatch.setattr(threads, "current_load", lambda interval=0.1: 1.2 if interval < 0.5 else 0.1)
    assert threads.default_threads(cpus=2, cpu_count=2, env={}) == 2


def test_cpu_times_count_steal_and_iowait_as_not_busy(monkeypatch):
    """/proc/stat: user nice system idle iowait irq softirq steal; busy = user + nice + system + irq + softirq."""
    import io

    line = "cpu  100 20 30 500 40 5 5 300 0 0\n"
    monkeypatch.setattr(threads, "open", lambda *a, **k: io.StringIO(line), raising=False)
    monkeypatch.setattr(threads.os, "sysconf", lambda name: 100)
    busy, total = threads._cpu_times()
    assert busy == pytest.approx(1.6) and total == pytest.approx(10.0)


_Snapshot = threads._Snapshot


def _snapshot(at: float, own: float, busy: float, total: float):
    snap = _Snapshot.__new__(_Snapshot)
    snap.at, snap.own, snap.times = at, own, (busy, total)
    return snap


def test_load_of_other_processes_leaves_out_this_process(monkeypatch):
    """Two CPUs over 1 s (total 2 CPU-s): 1.5 CPU-s busy of which this process used 1.2: others kept 0.3 CPU busy."""
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    first, second = _snapshot(0.0, 10.0, 50.0, 100.0), _snapshot(1.0, 11.2, 51.5, 102.0)
    assert second.others_since(first) == pytest.approx(0.3)
    assert _snapshot(1.0, 12.0, 51.5, 102.0).others_since(first) == 0.0  # own time counted coarser: never < 0
    assert _snapshot(1.0, 11.0, 51.0, 100.0).others_since(first) is None  # no time passed


def test_retune_follows_other_processes_and_never_a_fixed_count(monkeypatch):
    """An automatic count is re-chosen from the load since the last re-choice, at most every `every` seconds;
    a count fixed by the user (configure_threads(n), AMBIENT_SCIENCE_THREADS, OMP_NUM_THREADS) is left alone."""
    old = torch.get_num_threads()
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    snaps = iter([_snapshot(30.0, 68.0, 110.0, 160.0), _snapshot(60.0, 98.0, 170.0, 220.0)])
    monkeypatch.setattr(threads, "_Snapshot", lambda: next(snaps))
    clock = [30.0]
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    try:
        torch.set_num_threads(1)
        monkeypatch.setattr(threads, "_auto", {"cpus": 2, "load": 1.0, "snapshot": _snapshot(0.0, 8.0, 50.0, 100.0)})
        assert threads.retune(every=40.0) is None  # 30 s < 40 s: nothing measured
        # 0-30 s: both CPUs busy (60 CPU-s), all of it this process: the other processes are gone -> 2 threads
        assert threads.retune(every=20.0) == 2 and torch.get_num_threads() == 2
        assert "automatic: 2 usable CPU(s), 0.0 busy" in threads.describe()
        clock[0] = 60.0
        # 30-60 s: both CPUs busy, this process only 30 CPU-s: another process holds a CPU -> 1 thread
        assert threads.retune(every=20.0) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(threads, "_auto", {})
        monkeypatch.setenv("AMBIENT_SCIENCE_THREADS", "1")
        assert threads.retune(every=0.0) is None and torch.get_num_threads() == 1
        assert "fixed (AMBIENT_SCIENCE_THREADS=1)" in threads.describe()
        monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
        assert "of 2 usable CPU(s)" in threads.describe() and "to use every core" in threads.describe()
    finally:
        torch.set_num_threads(old)


def test_configure_threads_is_automatic_only_without_a_count(monkeypatch):
    old = torch.get_num_threads()
    monkeypatch.delenv("AMBIENT_SCIENCE_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_auto", {})
    try:
        configure_threads(1)
        assert threads._auto == {}
        configure_threads()
        assert threads._auto["cpus"] == usable_cpus() and "automatic" in threads.describe()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        configure_threads()
        assert threads._auto == {} and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(old)


def test_cpu_seconds_count_finished_workers():
    """A worker process that burnt CPU and was reaped counts as this program's CPU, not as another process's load
    (the MRI example writes its volumes in a process pool just before training, whose first re-choice would
    otherwise see two busy CPUs and drop to one thread)."""
    import subprocess
    import sys

    before = threads.cpu_seconds()
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    assert threads.cpu_seconds() - before >= 0.25
