"""The benchmarks must not rot: ``benchmarks/run_all.py --quick`` runs every section and writes its layout.

No timing is asserted: only that every section ran, and the shape of ``results.json`` and ``RESULTS.md``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ["sense", "vis", "closure", "train", "sampling", "quality", "gpu"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    runs = out / "runs"
    (runs / "mri_knee").mkdir(parents=True)
    (runs / "mri_knee" / "metrics.json").write_text(json.dumps({"zero_filled": {"psnr": 25.0, "ssim": 0.7}}))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick", "--out", str(out)]
    cmd += ["--runs", str(runs), "--gpu-device", "cpu", "--no-ehtim"]  # ehtim alone takes seconds to import
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}  # no re-exec
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "results.json").read_text()), (out / "RESULTS.md").read_text()


@pytest.mark.slow
def test_every_section_runs_and_has_the_layout(quick_run):
    results, _ = quick_run
    assert results["meta"]["quick"] is True
    machine = results["meta"]["machine"]
    for key in ("cpu", "usable_cpus", "load_average", "torch", "numpy", "torch_threads", "env_threads", "optional"):
        assert key in machine
    assert machine["torch_threads"] == 1 and machine["env_threads"]["OPENBLAS_NUM_THREADS"] == "1"
    assert list(results["sections"]) == SECTIONS
    for name, sec in results["sections"].items():
        assert "error" not in sec, (name, sec.get("error"))
        assert {"title", "description", "columns", "rows", "skipped", "notes", "targets", "seconds"} <= set(sec)
        assert sec["rows"], name
        first = sec["columns"][0][0]
        assert all(first in row for row in sec["rows"]), name
        for t in sec["targets"]:
            assert {"name", "value", "op", "threshold", "met"} <= set(t) and t["op"] in ("<=", ">=")


@pytest.mark.slow
def test_ratios_and_agreement(quick_run):
    results, _ = quick_run
    sense = results["sections"]["sense"]["rows"]
    assert all(r["speedup"] > 0 and len(r["speedup_iqr"]) == 2 for r in sense)
    assert max(r["agree"] for r in sense if "agree" in r) < 1e-5  # ours and sigpy compute the same operator
    vis = results["sections"]["vis"]["rows"]
    assert all(r["agree"] < 1e-5 for r in vis if "dense DFT" in r["impl"])
    train = results["sections"]["train"]["rows"]
    assert {r["family"] for r in train} >= {"pixel", "mri"} and all(r["ratio"] > 0 for r in train)
    names = [r["sampler"] for r in results["sections"]["sampling"]["rows"]]
    assert any(n.startswith("A-DPS") for n in names) and any(n.startswith("DAPS") for n in names)


@pytest.mark.slow
def test_quality_tables_are_read_or_marked_not_run(quick_run):
    results, md = quick_run
    status = {r["example"]: r["status"] for r in results["sections"]["quality"]["rows"]}
    assert status["memorization"] == "not run"
    assert status["black_hole"] == "read docs/black_hole_metrics.json"  # no run there: the committed copy
    assert status["mri_knee"].startswith("read") and "docs" not in status["mri_knee"]
    assert results["sections"]["quality"]["tables"]["mri_knee"]["rows"][0]["psnr"] == 25.0
    for heading in ("## Machine", "## Method", "## Targets", "| zero_filled | 25.0 |"):
        assert heading in md


def test_quality_table_of_an_example_is_one_row_per_method():
    """The MRI example's ``{"test": {R: {method: {metric}}}}`` becomes methods × (R, metric) with two decimals,
    metrics that not every method has (the λ of a baseline) left out; the black-hole layout ``{method: {metric}}``
    one row per method; anything else falls back to the generic table."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from run_all import metrics_table
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    r4 = {"zero_filled": {"psnr": 17.791, "ssim": 0.4551}, "l1_wavelet": {"psnr": 18.049, "ssim": 0.4629, "lam": 3e-4}}
    r8 = {"zero_filled": {"psnr": 16.31, "ssim": 0.343}, "l1_wavelet": {"psnr": 16.4, "ssim": 0.343, "lam": 3e-4}}
    mri = {"train": {"steps": 800}, "test": {"4": r4, "8": r8}}
    columns, rows = metrics_table(mri)
    assert [c[0] for c in columns] == ["method", "R=4 psnr", "R=4 ssim", "R=8 psnr", "R=8 ssim"]
    assert rows[1] == {"method": "l1_wavelet", "R=4 psnr": "18.05", "R=4 ssim": "0.463", "R=8 psnr": "16.40",
                       "R=8 ssim": "0.343"}  # fmt: skip
    columns, rows = metrics_table({"test": {"rml": {"blur_psnr": 27.6, "chi2": 0.89}, "dirty": {"blur_psnr": 16.4}}})
    assert [c[0] for c in columns] == ["method", "blur_psnr"] and rows[0] == {"method": "rml", "blur_psnr": "27.60"}
    columns, rows = metrics_table({"test": {"note": "none"}})  # not a table of methods: the generic layout
    assert rows == [{"method": "test", "note": "none"}]
