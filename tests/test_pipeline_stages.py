"""Stage timing and side-by-side evaluation of the pipelines (ambient_science/pipelines/stages.py)."""

import threading

import torch

from ambient_science.pipelines.stages import side_by_side, timed


def test_side_by_side_keeps_the_order_gives_each_worker_a_share_and_restores_the_threads():
    old = torch.get_num_threads()
    seen = {}

    def work(item):
        seen[item] = (threading.get_ident(), torch.get_num_threads())
        return item * 10

    try:
        torch.set_num_threads(2)
        assert side_by_side(work, [4, 8], 2) == [40, 80]
        assert {threads for _, threads in seen.values()} == {1}  # two workers, one intra-op thread each
        assert torch.get_num_threads() == 2
        seen.clear()
        assert side_by_side(work, [4], 2) == [40]
        assert seen[4][1] == 2  # one worker keeps both
    finally:
        torch.set_num_threads(old)


def test_timed_adds_wall_and_cpu_seconds_per_stage():
    stages = {}
    for _ in range(2):
        with timed(stages, "work"):
            sum(i * i for i in range(20_000))
    assert set(stages) == {"work"} and stages["work"]["wall_s"] >= 0 and stages["work"]["cpu_s"] >= 0
