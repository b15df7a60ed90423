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
    monkeypatch.setattr(threads, "current_load", lambda: 2.0)  # two of four CPUs busy right now
    assert threads.default_threads(cpus=4, cpu_count=4, env={}) == 2
    monkeypatch.setattr(threads, "_measured", {})
    monkeypatch.setattr(threads, "current_load", lambda: None)  # no /proc/stat: the load average
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert threads.default_threads(cpus=4, cpu_count=4, env={}) == 4


def test_default_threads_measures_the_load_once_per_max_age(monkeypatch):
    """The 0.1 s /proc/stat measurement is taken once and reused for LOAD_MAX_AGE seconds, then taken anew."""
    import ambient_science.threads as threads

    calls = []
    clock = [100.0]
    monkeypatch.setattr(threads, "_measured", {})
    monkeypatch.setattr(threads, "current_load", lambda: calls.append(1) or 1.0)
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    assert threads.default_threads(cpus=2, cpu_count=2, env={}) == 1
    clock[0] += threads.LOAD_MAX_AGE / 2
    assert threads.default_threads(cpus=2, cpu_count=2, env={}) == 1
    assert len(calls) == 1
    clock[0] += threads.LOAD_MAX_AGE
    threads.default_threads(cpus=2, cpu_count=2, env={})
    assert len(calls) == 2
    assert threads.default_threads(cpus=2, load=0.0, cpu_count=2, env={}) == 2  # an explicit load measures nothing
    assert len(calls) == 2
