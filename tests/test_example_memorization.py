"""examples/memorization.py end to end in a tiny configuration (the real trend needs the default budget)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "memorization.py"


def test_example_opens_with_a_docstring():
    text = SCRIPT.read_text()
    assert text.startswith('"""') and "How to run" in text and "--quick" in text


@pytest.mark.slow
def test_memorization_example_tiny_run_writes_metrics(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "mem"
    cmd = [
        sys.executable, str(SCRIPT), "--out", str(out), "--levels", "0", "0.8",
        "--steps", "12", "--batch-size", "16", "--num-train", "32", "--num-samples", "16",
        "--sampler-steps", "3", "--threads", "1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)  # a hang guard only
    assert proc.returncode == 0, proc.stderr[-3000:]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["threshold"] == 0.95
    assert [lvl["p"] for lvl in metrics["levels"]] == [0.0, 0.8]
    for lvl in metrics["levels"]:
        assert {"p", "fraction_above", "median_nn_similarity", "quality"} <= set(lvl)
        assert 0.0 <= lvl["fraction_above"] <= 1.0
        assert -1.0 <= lvl["median_nn_similarity"] <= 1.0 and -1.0 <= lvl["quality"] <= 1.0
    for name in ("tradeoff.png", "histograms.png", "samples.png", "training.pt", "samples_p0.80.pt"):
        assert (out / name).is_file(), name
    assert "fraction_above" in proc.stdout
