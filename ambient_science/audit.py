"""Memorisation audit: how close is each generated sample to its nearest training image?

A prior that copies its training set produces samples that are near-duplicates of training images.
For each sample ``s`` the audit finds the training image ``t`` that maximises the similarity

    sim(s, t) = ⟨f(s), f(t)⟩ / (‖f(s)‖ ‖f(t)‖)

with ``f`` a feature function. The default ``f(x) = x − mean(x)`` (flattened) makes ``sim`` the
normalised cross-correlation (NCC, Pearson correlation of the pixels): 1 for an exact copy, invariant
to a brightness offset and a positive contrast scale. Any ``f`` can be plugged in (e.g. a pretrained
embedding); ``sim`` is then the cosine similarity of its features. Optionally the maximum is also taken
over horizontal/vertical flips and integer shifts up to ``max_shift`` pixels of the training image, so
a flipped or shifted copy counts as a copy (shifted images are compared on the central
``(H − 2s) × (W − 2s)`` crop of the sample against every equally sized crop of the training image).

Copying is measured, as in the diffusion-memorisation literature (Somepalli et al. 2023; Carlini et
al. 2023), by the similarity of each sample to its nearest training image; a sample counts as a
near-copy when that similarity exceeds a threshold (0.95 by default).

Interpret the numbers against a reference: the nearest-neighbour similarity of *held-out* images of the
same distribution to the training set (``reference=`` in :func:`memorization_report`) is what a sampler
that generalises perfectly would show.

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> training = torch.randn(16, 1, 8, 8, generator=g)
    >>> samples = torch.cat([training[:3], torch.randn(5, 1, 8, 8, generator=g)])
    >>> sim, idx = nearest_neighbours(samples, training)
    >>> idx[:3].tolist(), [round(v, 4) for v in sim[:3].tolist()]
    ([0, 1, 2], [1.0, 1.0, 1.0])
    >>> memorization_report(samples, training)["fraction_above"]
    0.375

Plots import matplotlib lazily (:func:`plot_histogram`, :func:`plot_closest_pairs`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "FeatureFn",
    "heldout_coverage",
    "load_images",
    "memorization_report",
    "ncc_features",
    "nearest_neighbours",
    "plot_closest_pairs",
    "plot_histogram",
    "similarity_summary",
]

FeatureFn = Callable[[Tensor], Tensor]
"""``f(images) -> features``: ``(B, C, H, W)`` -> ``(B, ...)`` (flattened to ``(B, d)``)."""

DEFAULT_THRESHOLD = 0.95
DEFAULT_BINS = 80  # equal bins over [-1, 1]: width 0.025, so 0.95 is a bin edge


# ---------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------


def _as_images(x: Any, name: str) -> Tensor:
    """A finite, real, non-empty ``(N, C, H, W)`` float32 tensor; ``(N, H, W)`` gets a channel axis."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.is_complex():
        raise ValueError(f"{name} is complex: audit magnitudes (x.abs()) or real/imaginary channels explicitly")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W) or (N, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0 or x[0].numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    x = x.detach().to(torch.float32)
    bad = ~torch.isfinite(x)
    if bad.any():
        which = bad.reshape(x.shape[0], -1).any(dim=1).nonzero().flatten()
        raise ValueError(f"{name} has NaN or Inf values in {len(which)} image(s), e.g. index {int(which[0])}")
    return x


def ncc_features(images: Tensor) -> Tensor:
    """Mean-removed images, flattened: their cosine similarity is the normalised cross-correlation.

    ``f(x) = vec(x) − mean(x)``, so ``⟨f(s), f(t)⟩ / (‖f(s)‖ ‖f(t)‖) = NCC(s, t)``. A constant image has
    ``f = 0`` and similarity 0 to everything.

    Shape: ``(B, C, H, W)`` -> ``(B, C·H·W)``.
    """
    flat = images.reshape(images.shape[0], -1)
    return flat - flat.mean(dim=1, keepdim=True)


def _unit(features: Tensor, name: str, batch: int) -> Tensor:
    if features.ndim < 1 or features.shape[0] != batch:
        raise ValueError(f"feature_fn returned shape {tuple(features.shape)} for {batch} {name} images")
    f = features.reshape(batch, -1).to(torch.float32)
    if f.shape[1] == 0 or not torch.isfinite(f).all():
        raise ValueError(f"feature_fn returned empty or non-finite features for {name}")
    norm = f.norm(dim=1, keepdim=True)
    return torch.where(norm > 0, f / norm.clamp_min(1e-30), torch.zeros_like(f))


def _variants(images: Tensor, max_shift: int, flips: bool) -> Tensor:
    """Every flip and shift of each image, cropped to the central ``(H − 2s) × (W − 2s)`` window.

    Shape: ``(B, C, H, W)`` -> ``(B, V, C, H − 2s, W − 2s)``, ``V = (1 or 4) · (2s + 1)²``.
    """
    s = max_shift
    H, W = images.shape[-2:]
    flipped = [images]
    if flips:
        flipped += [images.flip(-1), images.flip(-2), images.flip(-1, -2)]
    crops = [
        t[..., s + dy : H - s + dy, s + dx : W - s + dx]
        for t in flipped
        for dy in range(-s, s + 1)
        for dx in range(-s, s + 1)
    ]
    return torch.stack(crops, dim=1)


def _center(images: Tensor, max_shift: int) -> Tensor:
    s = max_shift
    return images[..., s : images.shape[-2] - s, s : images.shape[-1] - s] if s else images


# ---------------------------------------------------------------------------------------------------
# nearest neighbours
# ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def nearest_neighbours(
    samples: Tensor | np.ndarray,
    training: Tensor | np.ndarray,
    *,
    feature_fn: FeatureFn | None = None,
    max_shift: int = 0,
    flips: bool = False,
    batch_size: int = 1024,
) -> tuple[Tensor, Tensor]:
    """The most similar training image of every sample, and the similarity.

    ``sim_i = max_{j, T} cos(f(s_i), f(T t_j))``, ``index_i`` the maximising ``j``, with ``f`` =
    ``feature_fn`` (default :func:`ncc_features`: NCC) and ``T`` ranging over the identity, plus the
    flips (``flips``) and integer shifts up to ``max_shift`` pixels (then on the central crop).

    Args:
        samples: generated images.
        training: the training images, same ``(C, H, W)``.
        feature_fn: ``(B, C, H', W') -> (B, ...)`` features; similarity is their cosine.
        max_shift: largest shift in pixels along each axis (0: none).
        flips: also compare against horizontally and vertically flipped training images.
        batch_size: rows per similarity block (memory ~ ``batch_size²`` floats).

    Shape: ``samples (N, C, H, W)`` (or ``(N, H, W)``), ``training (M, C, H, W)`` ->
    ``similarity (N,)`` float32 in ``[-1, 1]``, ``index (N,)`` int64 into ``training``.
    """
    samples = _as_images(samples, "samples")
    training = _as_images(training, "training")
    if samples.shape[1:] != training.shape[1:]:
        raise ValueError(
            f"samples are (C, H, W) = {tuple(samples.shape[1:])} but training images are "
            f"{tuple(training.shape[1:])}; resize or crop them to the same shape first"
        )
    max_shift = int(max_shift)
    H, W = samples.shape[-2:]
    if max_shift < 0 or 2 * max_shift >= min(H, W):
        raise ValueError(f"max_shift must be in [0, {(min(H, W) - 1) // 2}] for {H}×{W} images, got {max_shift}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    f = feature_fn or ncc_features
    N, M = samples.shape[0], training.shape[0]
    V = (4 if flips else 1) * (2 * max_shift + 1) ** 2

    centred = _center(samples, max_shift)
    fs = torch.cat([_unit(f(b), "sample", b.shape[0]) for b in centred.split(batch_size)])
    best = torch.full((N,), -math.inf)
    index = torch.zeros(N, dtype=torch.int64)
    chunk = max(1, batch_size // V)  # training images per block
    for start in range(0, M, chunk):
        t = _variants(training[start : start + chunk], max_shift, flips)
        b = t.shape[0]
        ft = _unit(f(t.reshape(b * V, *t.shape[2:])), "training", b * V)
        if ft.shape[1] != fs.shape[1]:
            raise ValueError(f"feature_fn gave {fs.shape[1]} features for samples but {ft.shape[1]} for training")
        for lo in range(0, N, batch_size):
            sim = (fs[lo : lo + batch_size] @ ft.T).reshape(-1, b, V).amax(dim=2)
            value, j = sim.max(dim=1)
            better = value > best[lo : lo + batch_size]
            best[lo : lo + batch_size] = torch.where(better, value, best[lo : lo + batch_size])
            index[lo : lo + batch_size] = torch.where(better, j + start, index[lo : lo + batch_size])
    return best.clamp(-1.0, 1.0), index


# ---------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------


def _bin_edges(bins: int | Sequence[float]) -> Tensor:
    if isinstance(bins, int):
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        return torch.linspace(-1.0, 1.0, bins + 1, dtype=torch.float64)
    edges = torch.as_tensor(list(bins), dtype=torch.float64)
    if edges.ndim != 1 or len(edges) < 2 or not bool((edges[1:] > edges[:-1]).all()):
        raise ValueError("bins must be an int or an increasing sequence of at least 2 edges")
    return edges


def similarity_summary(
    similarity: Tensor, threshold: float = DEFAULT_THRESHOLD, *, bins: int | Sequence[float] = DEFAULT_BINS
) -> dict[str, Any]:
    """Statistics of nearest-neighbour similarities: fraction above ``threshold``, quantiles, histogram.

    ``fraction_above = #{i : sim_i > threshold} / N``; the histogram counts ``sim`` in ``bins`` (an int:
    equal bins over ``[-1, 1]``; or edges), with values outside the edges clipped into the end bins.

    Shape: ``similarity (N,)``.
    """
    sim = torch.as_tensor(similarity, dtype=torch.float64).flatten()
    if sim.numel() == 0:
        raise ValueError("no similarities to summarise")
    if not torch.isfinite(sim).all():
        raise ValueError("similarities contain NaN or Inf")
    edges = _bin_edges(bins)
    clipped = sim.clamp(float(edges[0]), float(edges[-1]))
    counts = torch.histc(clipped, bins=len(edges) - 1, min=float(edges[0]), max=float(edges[-1]))
    if not isinstance(bins, int):  # histc needs equal bins: count by searchsorted instead
        which = (torch.searchsorted(edges, clipped, right=True) - 1).clamp(0, len(edges) - 2)
        counts = torch.bincount(which, minlength=len(edges) - 1)
    q = torch.quantile(sim, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64))
    above = int((sim > threshold).sum())
    return {
        "num": int(sim.numel()),
        "threshold": float(threshold),
        "num_above": above,
        "fraction_above": above / sim.numel(),
        "median": float(q[2]),
        "mean": float(sim.mean()),
        "max": float(sim.max()),
        "quantiles": {"0.05": float(q[0]), "0.25": float(q[1]), "0.75": float(q[3]), "0.95": float(q[4])},
        "histogram": {"counts": [int(c) for c in counts.tolist()], "bins": [float(e) for e in edges.tolist()]},
    }


def memorization_report(
    samples: Tensor | np.ndarray,
    training: Tensor | np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    reference: Tensor | np.ndarray | None = None,
    feature_fn: FeatureFn | None = None,
    max_shift: int = 0,
    flips: bool = False,
    bins: int | Sequence[float] = DEFAULT_BINS,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """The memorisation audit of ``samples`` against ``training`` as a JSON-ready dict.

    Keys: ``num_samples``, ``num_training``, ``threshold``, ``fraction_above`` (share of samples with
    nearest-neighbour similarity ``> threshold``), ``num_above``, ``median``, ``mean``, ``max``,
    ``quantiles``, ``histogram`` (``counts``, ``bins``), per-sample ``similarity`` and ``index`` lists,
    ``settings``; and, with ``reference`` (held-out images of the same distribution), ``reference``: the
    same statistics for the held-out images' nearest training neighbours, the baseline of a sampler
    that does not copy.

    Shape: ``samples (N, C, H, W)``, ``training (M, C, H, W)``, ``reference (R, C, H, W)``.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [-1, 1], got {threshold}")
    kw = {"feature_fn": feature_fn, "max_shift": max_shift, "flips": flips, "batch_size": batch_size}
    sim, index = nearest_neighbours(samples, training, **kw)
    summary = similarity_summary(sim, threshold, bins=bins)
    report: dict[str, Any] = {
        "num_samples": summary.pop("num"),
        "num_training": int(_as_images(training, "training").shape[0]),
        **summary,
        "similarity": [float(v) for v in sim.tolist()],
        "index": [int(i) for i in index.tolist()],
        "settings": {
            "feature": "ncc" if feature_fn is None else getattr(feature_fn, "__name__", type(feature_fn).__name__),
            "max_shift": int(max_shift),
            "flips": bool(flips),
        },
    }
    if reference is not None:
        ref_sim, _ = nearest_neighbours(reference, training, **kw)
        ref = similarity_summary(ref_sim, threshold, bins=bins)
        ref["similarity"] = [float(v) for v in ref_sim.tolist()]
        report["reference"] = ref
    return report


# ---------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------

_KEYS = ("samples", "images", "x", "target", "data")


def heldout_coverage(heldout: Tensor, samples: Tensor) -> float:
    """How well samples cover fresh images of the distribution: ``mean_j max_i NCC(h_j, s_i)`` (higher is better).

    A sample-quality proxy: noisy, blurred or mode-collapsed samples score low; copies of the training images
    score like the training set itself.

    Shape: ``heldout (M, C, H, W)``, ``samples (N, C, H, W)``.
    """
    sim, _ = nearest_neighbours(heldout, samples)
    return float(sim.mean())


def _pick(items: Mapping[str, Any], key: str | None, path: Path) -> Any:
    if key is not None:
        if key not in items:
            raise KeyError(f"{path} has no entry {key!r}; it has {sorted(items)}")
        return items[key]
    if len(items) == 1:
        return next(iter(items.values()))
    for k in _KEYS:
        if k in items:
            return items[k]
    raise ValueError(f"{path} holds several arrays {sorted(items)}; choose one with key=... (--key)")


def load_images(path: str | Path, key: str | None = None, *, channels_last: bool = False) -> Tensor:
    """Images from a ``.pt``/``.pth`` (tensor or dict of tensors), ``.npy``, ``.npz`` or ``.h5``/``.hdf5`` file.

    ``key`` names the array in a dict / npz / HDF5 file (default: the only one, else the first of
    ``samples``, ``images``, ``x``, ``target``, ``data``). Complex data become magnitudes; integers
    become float32; ``channels_last`` reads ``(N, H, W, C)``.

    Shape: ``(N, C, H, W)`` float32 (``(N, H, W)`` files get ``C = 1``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        x = _pick(obj, key, path) if isinstance(obj, Mapping) else obj
    elif suffix == ".npy":
        x = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            x = np.asarray(_pick(dict(npz), key, path))
    elif suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as f:
            arrays = {k: v for k, v in f.items() if isinstance(v, h5py.Dataset)}
            x = np.asarray(_pick(arrays, key, path)[()])
    else:
        raise ValueError(f"{path}: unknown image file type {suffix!r}; use .pt, .npy, .npz or .h5")
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biufc":
            raise ValueError(f"{path}: array of dtype {x.dtype} is not numeric")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise ValueError(f"{path}: expected a tensor or array, got {type(x).__name__}")
    if x.is_complex():
        x = x.abs()
    x = x.to(torch.float32)
    if channels_last and x.ndim == 4:
        x = x.permute(0, 3, 1, 2).contiguous()
    return _as_images(x, str(path))


# ---------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------


def _display(img: Tensor) -> np.ndarray:
    """One image for ``imshow``: grey (1 channel, or the channel norm), or RGB; scaled to [0, 1]."""
    x = img.detach().to(torch.float32).cpu()
    x = x.permute(1, 2, 0) if x.shape[0] == 3 else (x[0] if x.shape[0] == 1 else x.norm(dim=0))
    lo, hi = x.min(), x.max()
    return ((x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)).numpy()


def _save(fig, path: str | Path | None) -> None:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")


def plot_histogram(
    similarities: Tensor | Mapping[str, Tensor],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    bins: int | Sequence[float] = DEFAULT_BINS,
    path: str | Path | None = None,
    title: str = "nearest-training-image similarity",
):
    """Histogram(s) of nearest-neighbour similarities with the threshold marked; returns the Figure.

    ``similarities``: one ``(N,)`` tensor, or ``{label: (N,) tensor}`` drawn as overlaid step
    histograms (e.g. one per prior, plus the held-out reference). Saved to ``path`` when given.
    """
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no backend switch

    series = {"samples": similarities} if not isinstance(similarities, Mapping) else dict(similarities)
    if not series:
        raise ValueError("nothing to plot")
    edges = _bin_edges(bins).numpy()
    lo = min(float(torch.as_tensor(s).min()) for s in series.values())
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    for label, sim in series.items():
        values = torch.as_tensor(sim, dtype=torch.float64).flatten().numpy()
        ax.hist(values, bins=edges, histtype="step", linewidth=1.5, density=True, label=f"{label} (n={len(values)})")
    ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlim(max(-1.0, lo - 0.05), 1.0)
    ax.set_xlabel("similarity to nearest training image")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_closest_pairs(
    samples: Tensor,
    training: Tensor,
    similarity: Tensor,
    index: Tensor,
    *,
    k: int = 8,
    path: str | Path | None = None,
    title: str | None = None,
):
    """The ``k`` samples most similar to a training image (top row) above their nearest training images.

    ``similarity``, ``index`` from :func:`nearest_neighbours`. Each image is min–max scaled for display.
    Returns the Figure; saved to ``path`` when given.

    Shape: ``samples (N, C, H, W)``, ``training (M, C, H, W)``, ``similarity (N,)``, ``index (N,)``.
    """
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no backend switch

    samples, training = _as_images(samples, "samples"), _as_images(training, "training")
    similarity, index = torch.as_tensor(similarity).flatten(), torch.as_tensor(index).flatten().long()
    if not len(similarity) == len(index) == len(samples):
        raise ValueError(f"{len(samples)} samples but {len(similarity)} similarities and {len(index)} indices")
    k = max(1, min(int(k), len(samples)))
    order = torch.argsort(similarity, descending=True)[:k]
    fig = Figure(figsize=(1.4 * k, 3.2))
    axes = fig.subplots(2, k, squeeze=False)
    for col, i in enumerate(order.tolist()):
        j = int(index[i])
        axes[0, col].imshow(_display(samples[i]), cmap="gray")
        axes[0, col].set_title(f"{float(similarity[i]):.3f}", fontsize=8)
        axes[1, col].imshow(_display(training[j]), cmap="gray")
        axes[1, col].set_xlabel(f"train #{j}", fontsize=7)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("sample", fontsize=8)
    axes[1, 0].set_ylabel("nearest\ntraining", fontsize=8)
    fig.suptitle(title or f"the {k} samples closest to a training image", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return fig
