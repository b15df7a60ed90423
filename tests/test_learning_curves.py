"""benchmarks/learning_curves.py: the speckle measure, the table and the resume bookkeeping (no training)."""

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("learning_curves", ROOT / "benchmarks" / "learning_curves.py")
lc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lc)

pytestmark = pytest.mark.usefixtures("one_thread")


def _truth():
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    return ((xx.square() + yy.square()) < 0.4).float()[None].repeat(2, 1, 1)


def test_background_speckle_rises_with_pixel_noise():
    truth = _truth()
    smooth = lc.background_hf(truth[:, None].to(torch.complex64), truth)
    noisy = truth + 0.05 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    speckled = lc.background_hf(noisy, truth)
    quieter = lc.background_hf(truth + 0.2 * (noisy - truth), truth)
    assert smooth < -100 and -30 < speckled < -20 and quieter < speckled - 10  # dB; exact estimate: no HF energy


def test_table_plot_and_point_lookup(tmp_path):
    m = {k: {"psnr": 20.0 + i, "ssim": 0.5, "nmse": 0.1, "bg_hf_db": -30.0}
         for i, k in enumerate(("zero_filled", "l1_wavelet", "ambient_one_step", "ambient_dps"))}  # fmt: skip
    results = {"points": [
        {"family": "knee", "prior": p, "images": n, "R": R, "operator": "full", "eval": "4sl/2x32", "metrics": m,
         "train_seconds": 1.0}
        for p in ("ambient", "clean") for n in (4000, 10000) for R in (4, 8)
    ]}  # fmt: skip
    lc.write_table(tmp_path, results)
    lc.write_plot(tmp_path, results)
    table = (tmp_path / "table.md").read_text().splitlines()
    assert len(table) == 2 + 8 and "| knee | ambient | 4000 |" in table[2]
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert lc.find(results, prior="clean", images=10000, R=8, eval="4sl/2x32") is not None
    assert lc.find(results, prior="clean", images=10000, R=8, eval="4sl/4x48") is None


def test_inference_variants_parse_to_canonical_labels():
    v = lc.parse_variant(" full , smin=0.050 ,switch=0.2:law, k=4, weights=model")
    assert v == {"operator": "full", "k": 4, "smin": 0.05, "switch": (0.2, "law"), "weights": "model"}
    assert lc.variant_label(v) == "full,k=4,smin=0.05,switch=0.2:law,weights=model"
    assert lc.variant_label(lc.parse_variant("law")) == "law"  # a bare operator: the points of earlier runs
    for bad in ("everything", "full,k=x", "full,switch=0.2:all", "full,weights=best", "full,depth=3"):
        with pytest.raises(ValueError, match="variant"):
            lc.parse_variant(bad)
    args = lc.argparse.Namespace(variants="law; full,smin=0.1", inference_operator="full")
    assert lc.point_operators("ambient", args) == ["law", "full,smin=0.1"]
    args.variants = ""
    assert lc.point_operators("ambient", args) == ["full"] and lc.point_operators("em", args) == ["law"]


def test_replot_draws_a_results_file_and_refuses_a_missing_one(tmp_path):
    m = {k: {"psnr": 20.0 + i, "ssim": 0.5, "bg_hf_db": -30.0}
         for i, k in enumerate(("zero_filled", "l1_wavelet", "ambient_dps"))}  # fmt: skip
    points = [{"family": "knee", "prior": p, "images": n, "R": 4, "operator": "law" if p == "em" else "full",
               "eval": "4sl/4x48", "metrics": m} for p in ("ambient", "ambient_hw20", "em") for n in (4000, 10000)]
    (tmp_path / "record.json").write_text(lc.json.dumps({"points": points}))
    figure = tmp_path / "docs" / "curves.png"
    lc.main(["--replot", str(tmp_path / "record.json"), "--figure", str(figure)])
    assert figure.stat().st_size > 0 and not (tmp_path / "docs" / "results.json").exists()
    with pytest.raises(SystemExit):
        lc.main(["--replot", str(tmp_path / "missing.json"), "--figure", str(figure)])


def test_an_em_points_cost_counts_its_e_steps_and_its_initial_prior(tmp_path):
    point = {"images": 30000, "em_compute": {"e_step_forwards": 46080, "e_step_vjps": 64512}}
    assert lc.compute_images(point, None) == 30000 + 55296
    (tmp_path / "state.json").write_text(lc.json.dumps({"extra": {"images_seen": 100000}}))
    assert lc.compute_images(point, str(tmp_path)) == 100000 + 30000 + 55296
    exported = tmp_path / "exported"
    exported.mkdir()
    (exported / "prior.json").write_text(lc.json.dumps({"step": 8500, "train": {"batch_size": 16}}))
    assert lc.compute_images(point, str(exported)) == 136000 + 30000 + 55296
    assert lc.compute_images(point, str(tmp_path / "nothing")) == 30000 + 55296


def test_add_point_rereads_the_results_file(tmp_path):
    m = {k: {"psnr": 20.0, "ssim": 0.5, "bg_hf_db": -30.0}
         for k in ("zero_filled", "l1_wavelet", "ambient_one_step", "ambient_dps")}  # fmt: skip
    point = {"family": "knee", "prior": "ambient", "images": 4000, "R": 4, "operator": "full", "eval": "4sl/4x48",
             "metrics": m}  # fmt: skip
    lc.add_point(tmp_path, point)
    other = lc.load_results(tmp_path / "results.json")  # another invocation adds a point meanwhile
    other["points"].append({**point, "images": 10000})
    (tmp_path / "results.json").write_text(lc.json.dumps(other))
    results = lc.add_point(tmp_path, {**point, "R": 8})
    assert [(p["images"], p["R"]) for p in results["points"]] == [(4000, 4), (10000, 4), (4000, 8)]
    assert (tmp_path / "table.md").exists() and (tmp_path / "curves.png").exists()
