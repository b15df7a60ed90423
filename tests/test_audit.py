"""Memorisation audit: nearest neighbours, the report, file loading, figures and the ``audit`` CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ambient_science.audit import (
    load_images,
    memorization_report,
    ncc_features,
    nearest_neighbours,
    plot_closest_pairs,
    plot_histogram,
    similarity_summary,
)
from ambient_science.cli import main


def _images(n: int, seed: int, shape=(1, 12, 12)) -> torch.Tensor:
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


def test_exact_duplicates_have_similarity_one_and_fraction_one():
    training = _images(10, 0)
    samples = training[[3, 7, 1, 1]]
    sim, idx = nearest_neighbours(samples, training)
    assert idx.tolist() == [3, 7, 1, 1]
    torch.testing.assert_close(sim, torch.ones(4), atol=1e-5, rtol=0)
    report = memorization_report(samples, training)
    assert report["fraction_above"] == 1.0 and report["num_above"] == 4
    assert report["median"] == pytest.approx(1.0, abs=1e-5)


def test_ncc_is_invariant_to_brightness_and_contrast_and_matches_pearson():
    training = _images(6, 1)
    samples = 3.0 * training[2:3] + 0.7
    sim, idx = nearest_neighbours(samples, training)
    assert idx.item() == 2 and sim.item() == pytest.approx(1.0, abs=1e-5)
    a, b = _images(2, 2)
    sim, _ = nearest_neighbours(a[None], b[None])
    pearson = np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1]
    assert sim.item() == pytest.approx(pearson, abs=1e-5)


def test_independent_noise_is_not_flagged():
    report = memorization_report(_images(50, 3), _images(40, 4))
    assert report["fraction_above"] == 0.0
    assert abs(report["median"]) < 0.5


def test_shifted_and_flipped_copies_found_only_when_robust():
    training = _images(8, 5, shape=(1, 16, 16))
    shifted = torch.roll(training[4:5], shifts=(2, -1), dims=(-2, -1))
    flipped = training[6:7].flip(-1)
    samples = torch.cat([shifted, flipped])
    plain, _ = nearest_neighbours(samples, training)
    assert (plain < 0.5).all()
    sim, idx = nearest_neighbours(samples, training, max_shift=2, flips=True)
    assert idx.tolist() == [4, 6]
    assert sim[0] == pytest.approx(1.0, abs=1e-5)  # the central crop of a shifted image is an exact crop
    assert sim[1] == pytest.approx(1.0, abs=1e-5)
    only_shift, _ = nearest_neighbours(samples, training, max_shift=2)
    assert only_shift[0] == pytest.approx(1.0, abs=1e-5) and only_shift[1] < 0.5


def test_blocking_does_not_change_the_result():
    training, samples = _images(37, 6), _images(23, 7)
    full = nearest_neighbours(samples, training, max_shift=1, flips=True, batch_size=4096)
    small = nearest_neighbours(samples, training, max_shift=1, flips=True, batch_size=5)
    torch.testing.assert_close(full[0], small[0])
    assert torch.equal(full[1], small[1])


def test_pluggable_feature_function():
    training = _images(5, 8)
    checkerboard = (torch.arange(12)[:, None] + torch.arange(12)[None, :]) % 2 * 2.0 - 1.0
    samples = training + 5.0 * checkerboard  # a copy hidden under a strong high-frequency pattern:
    assert (nearest_neighbours(samples, training)[0] < 0.5).all()  # NCC misses it ...

    def low_pass(x: torch.Tensor) -> torch.Tensor:  # ... 2×2 means cancel the checkerboard exactly
        return torch.nn.functional.avg_pool2d(x, 2)

    sim, idx = nearest_neighbours(samples, training, feature_fn=low_pass)
    assert idx.tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(sim, torch.ones(5), atol=1e-5, rtol=0)
    report = memorization_report(samples, training, feature_fn=low_pass)
    assert report["settings"]["feature"] == "low_pass" and report["fraction_above"] == 1.0

    with pytest.raises(ValueError, match="feature_fn"):
        nearest_neighbours(samples, training, feature_fn=lambda x: x[:1])


def test_three_dimensional_inputs_and_numpy_are_accepted():
    training = _images(4, 10)
    sim, idx = nearest_neighbours(training[:, 0].numpy(), training[:, 0])
    assert idx.tolist() == [0, 1, 2, 3] and (sim > 0.9999).all()


@pytest.mark.parametrize(
    ("samples", "training", "match"),
    [
        (torch.randn(3, 1, 8, 8), torch.randn(4, 1, 8, 9), "same shape"),
        (torch.randn(0, 1, 8, 8), torch.randn(4, 1, 8, 8), "empty"),
        (torch.randn(3, 1, 8, 8), torch.randn(0, 1, 8, 8), "empty"),
        (torch.full((3, 1, 8, 8), float("nan")), torch.randn(4, 1, 8, 8), "NaN"),
        (torch.randn(3, 1, 8, 8), torch.randn(4, 1, 8, 8).index_fill_(0, torch.tensor([2]), float("inf")), "NaN"),
        (torch.randn(3, 8), torch.randn(4, 8), "shape"),
        (torch.randn(3, 1, 8, 8, dtype=torch.complex64), torch.randn(4, 1, 8, 8), "complex"),
    ],
)
def test_bad_inputs_raise_clear_errors(samples, training, match):
    with pytest.raises(ValueError, match=match):
        nearest_neighbours(samples, training)


def test_bad_settings_raise():
    x = torch.randn(3, 1, 8, 8)
    with pytest.raises(ValueError, match="max_shift"):
        nearest_neighbours(x, x, max_shift=4)
    with pytest.raises(ValueError, match="threshold"):
        memorization_report(x, x, threshold=1.5)
    with pytest.raises(TypeError):
        nearest_neighbours([1, 2], x)


def test_summary_histogram_and_reference():
    sim = torch.tensor([0.2, 0.5, 0.96, 0.99, 1.0])
    s = similarity_summary(sim, 0.95, bins=4)
    assert s["fraction_above"] == pytest.approx(0.6) and s["num_above"] == 3
    assert s["histogram"]["bins"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert s["histogram"]["counts"] == [0, 0, 1, 4] and sum(s["histogram"]["counts"]) == 5
    edges = similarity_summary(sim, 0.95, bins=[0.0, 0.5, 0.9, 1.0])["histogram"]
    assert edges["counts"] == [1, 1, 3]
    training = _images(6, 11)
    report = memorization_report(training[:2], training, reference=_images(5, 12))
    assert report["reference"]["num"] == 5 and report["reference"]["fraction_above"] == 0.0
    json.dumps(report)  # JSON-ready


def test_ncc_features_of_constant_image_is_zero():
    f = ncc_features(torch.full((2, 1, 4, 4), 3.0))
    assert torch.equal(f, torch.zeros(2, 16))
    sim, _ = nearest_neighbours(torch.full((1, 1, 4, 4), 3.0), torch.randn(3, 1, 4, 4))
    assert sim.item() == 0.0


def test_global_rng_untouched():
    state = torch.get_rng_state()
    memorization_report(_images(5, 13), _images(5, 14), max_shift=1, flips=True)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("suffix", [".pt", ".npy", ".npz", ".h5"])
def test_load_images_formats(tmp_path, suffix):
    x = _images(3, 15)[:, 0]  # (N, H, W)
    path = tmp_path / f"x{suffix}"
    if suffix == ".pt":
        torch.save({"samples": x}, path)
    elif suffix == ".npy":
        np.save(path, x.numpy())
    elif suffix == ".npz":
        np.savez(path, images=x.numpy())
    else:
        import h5py

        with h5py.File(path, "w") as f:
            f["images"] = (x + 1j * x).numpy().astype(np.complex64)  # complex -> magnitude
    got = load_images(path)
    want = (x * np.sqrt(2)).abs() if suffix == ".h5" else x
    torch.testing.assert_close(got, want[:, None])


def test_load_images_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_images(tmp_path / "missing.npy")
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match="unknown image file type"):
        load_images(tmp_path / "x.txt")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 4, 4)), b=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="several arrays"):
        load_images(tmp_path / "two.npz")
    with pytest.raises(KeyError, match="no entry"):
        load_images(tmp_path / "two.npz", "c")
    assert load_images(tmp_path / "two.npz", "b").shape == (2, 1, 4, 4)
    np.save(tmp_path / "hwc.npy", np.zeros((2, 4, 5, 3)))
    assert load_images(tmp_path / "hwc.npy", channels_last=True).shape == (2, 3, 4, 5)


def test_figures_written(tmp_path):
    pytest.importorskip("matplotlib")
    training = _images(6, 16)
    samples = torch.cat([training[:2], _images(3, 17)])
    sim, idx = nearest_neighbours(samples, training)
    fig = plot_histogram({"a": sim, "b": sim * 0.5}, path=tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 0 and fig is not None
    plot_closest_pairs(samples, training, sim, idx, k=10, path=tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
    with pytest.raises(ValueError, match="similarities"):
        plot_closest_pairs(samples, training, sim[:2], idx, path=tmp_path / "q.png")


def test_cli_writes_report_and_figures(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    training = _images(20, 18)
    samples = torch.cat([training[:5], _images(15, 19)])
    torch.save(samples, tmp_path / "s.pt")
    np.save(tmp_path / "t.npy", training.numpy())
    np.save(tmp_path / "r.npy", _images(7, 20).numpy())
    out = tmp_path / "audit"
    rc = main(
        ["audit", "--samples", str(tmp_path / "s.pt"), "--training", str(tmp_path / "t.npy"),
         "--reference", str(tmp_path / "r.npy"), "--threshold", "0.9", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    report = json.loads((out / "audit.json").read_text())
    assert report["fraction_above"] == pytest.approx(0.25) and report["threshold"] == 0.9
    assert report["index"][:5] == [0, 1, 2, 3, 4] and len(report["similarity"]) == 20
    assert report["reference"]["num"] == 7
    assert (out / "histogram.png").is_file() and (out / "closest_pairs.png").is_file()
    assert "25.0% above 0.9" in capsys.readouterr().out


def test_cli_reports_bad_input(tmp_path, capsys):
    np.save(tmp_path / "s.npy", np.zeros((3, 8, 8)))
    np.save(tmp_path / "t.npy", np.zeros((3, 9, 9)))
    rc = main(["audit", "--samples", str(tmp_path / "s.npy"), "--training", str(tmp_path / "t.npy"),
               "--out", str(tmp_path / "o"), "--no-plots"])  # fmt: skip
    assert rc == 2
    assert "same shape" in capsys.readouterr().err
    assert not (tmp_path / "o" / "audit.json").exists()
