"""The SYNTHETIC knee generator: seeded, labelled, anatomy varying per seed and smoothly across slices."""

import numpy as np
import torch

from ambient_science.datasets.synthetic_knee import knee_phantom, synthetic_knee_volume


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_same_seed_same_volume_and_global_rng_untouched():
    np.random.seed(1)
    torch.manual_seed(1)
    n_state, t_state = np.random.get_state()[1].copy(), torch.get_rng_state()
    a = synthetic_knee_volume(3, recon_size=(32, 32), num_slices=2)
    b = synthetic_knee_volume(3, recon_size=(32, 32), num_slices=2)
    np.testing.assert_array_equal(a["kspace"], b["kspace"])
    assert np.array_equal(np.random.get_state()[1], n_state) and torch.equal(torch.get_rng_state(), t_state)
    assert a["attrs"]["synthetic"] is True and "SYNTHETIC" in a["attrs"]["note"]
    assert "SYNTHETIC" in a["header"]


def test_phantom_is_structured_varies_per_seed_and_smoothly_over_slices():
    vols = [np.abs(knee_phantom(s, num_slices=6, grid_shape=(64, 48), pixel_size=(2 / 64, 2 / 48))) for s in (0, 1)]
    v = vols[0]
    assert v.shape == (6, 64, 48) and 0.5 < v.max() < 1.5
    # tissues of distinct brightness: background, dark (cortex, menisci), muscle, bright (fat, marrow)
    hist, _ = np.histogram(v[v > 0.02], bins=10, range=(0, 1))
    assert (hist > 0.02 * hist.sum()).sum() >= 4
    assert (v[:, :, :3] < 0.05).mean() > 0.5  # background at the sides of the leg
    adjacent = np.mean([_corr(v[i], v[i + 1]) for i in range(5)])
    far = _corr(v[0], v[5])
    assert adjacent > 0.8 and adjacent > far
    assert _corr(v[2], vols[1][2]) < 0.95  # a different seed is a different knee
    phase = np.angle(knee_phantom(0, num_slices=1, grid_shape=(64, 48), pixel_size=(2 / 64, 2 / 48))[0])
    inside = v[0] > 0.3
    dphi = np.abs(np.angle(np.exp(1j * np.diff(phase, axis=1))))[inside[:, 1:] & inside[:, :-1]]
    assert dphi.max() < 0.5  # smooth phase
