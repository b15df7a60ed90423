"""Knee MRI from undersampled k-space only: volumes -> measurement files -> priors -> reconstructions ->
fastMRI metrics (docs/design.md §5–§8).

The steps, each a function a user can call on its own:

1. :func:`source_volumes`: raw volumes, the user's fastMRI ``.h5`` files (the last 20 % held out) or built-in
   synthetic knee phantoms (written once under ``<out>/data/synthetic``, then reused), single-coil or, with
   ``coils``, multi-coil (birdcage receive coils);
2. :func:`prepare_volumes`: a measurement file of them at acceleration ``R`` (random phase-encode columns,
   fastMRI's centre fraction for ``R``: :data:`CENTER_FRACTION`) that holds only undersampled k-space; for
   test files, a separate targets file keeps the fully sampled images, for evaluation only; multi-coil files
   also hold ESPIRiT maps from each slice's calibration region (the fully sampled centre of its own
   undersampled k-space), so training and reconstruction go through the SENSE operator
   ``y_c = M F S_c x`` of one coil-combined image ``x``;
3. :func:`train_prior` (a prior trained here) or :func:`shipped_prior` (``mri-knee-synthetic-r4`` /
   ``-clean`` of :mod:`ambient_science.pretrained`, when it fits the data: single-coil synthetic volumes at
   the ``cpu`` preset's grid);
4. :func:`~ambient_science.pipelines.mri_eval.evaluate`: zero-filled, L1-wavelet, CG-SENSE (multi-coil),
   one-step and A-DPS per acceleration, with fastMRI's metrics;
5. :func:`run`: all of it for one :class:`KneeRun`, writing ``metrics.json`` and ``reconstructions.png``.

The sizes of a run (data, network, training and sampling budgets) are a :class:`Preset`: ``cpu`` (the
shipped prior's 64 × 64 grid of 128 × 128 synthetic volumes), ``gpu`` (full-resolution fastMRI) or ``quick``
(a tiny configuration for tests).

    >>> from ambient_science.pipelines import mri
    >>> metrics = mri.run(mri.KneeRun(out="runs/mri_knee", test_accelerations=(4,)))   # doctest: +SKIP
    >>> metrics["test"]["4"]["em_dps"]["psnr"]        # the shipped EM prior's row   # doctest: +SKIP
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ambient_science import pretrained
from ambient_science.datasets.measurements import MeasurementFile
from ambient_science.datasets.prepare import prepare_fastmri
from ambient_science.datasets.synthetic_knee import write_synthetic_knee, write_synthetic_knee_dataset
from ambient_science.pipelines.gpu_preset import GPU_DATA, GPU_NETWORK, GPU_SAMPLING, GPU_TRAIN
from ambient_science.pipelines.mri_eval import evaluate, save_figure, targets_path
from ambient_science.pipelines.stages import side_by_side, timed
from ambient_science.pipelines.training import train
from ambient_science.sampling.prior import Prior, load_prior
from ambient_science.threads import describe, retune
from ambient_science.training.checkpoint import list_checkpoints
from ambient_science.training.config import DataConfig, RunConfig, TrainConfig
from ambient_science.training.distributed import resolve_device
from ambient_science.training.losses import LossConfig

__all__ = [
    "CENTER_FRACTION",
    "PRESETS",
    "KneeRun",
    "Preset",
    "prepare_volumes",
    "prior_label",
    "run",
    "shipped_prior",
    "shipped_prior_fits",
    "source_volumes",
    "train_prior",
    "write_volumes",
]

CENTER_FRACTION = {4: 0.08, 8: 0.04}  # fastMRI's (acceleration, centre fraction) pairs; 0.08 otherwise


@dataclass(frozen=True)
class Preset:
    """Sizes of one run: data, network, training and sampling budgets."""

    train_volumes: int  # synthetic volumes (0: the user's files)
    test_volumes: int
    slices: int  # per synthetic volume
    recon_size: int  # synthetic volumes' recon size [px]
    resolution: int | None  # training grid [px] (None: the recon size)
    test_slices: int  # held-out slices reconstructed (the middle ones of each test volume)
    network: dict[str, Any] = field(default_factory=dict)
    steps: int = 3000
    batch_size: int = 16
    lr: float = 1e-3
    ema_halflife_images: float = 10_000
    warmup_images: int = 2_000
    dps_samples: int | None = None  # None: each prior's recommended count (its card's, else 4)
    dps_steps: int | None = None  # None: each prior's recommended steps (its card's, else dps_defaults' / 48)
    # A-DPS settings of a prior whose card records none (the in-run prior): {"steps", "sigma_max", "options"}
    dps_defaults: dict[str, Any] | None = None
    one_step_draws: int = 8
    # Tikhonov λ grid of CG-SENSE (multi-coil files only), picked like the L1 / TV λ
    cg_lams: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    # λ grids of the classical baselines, wide enough that the best λ is interior (issue #18: at 3e-4 .. 1e-2 the
    # best L1 λ was the grid's smallest at both R); benchmarks/mri_ood.py --calibrate prints the validation curve
    l1_lams: tuple[float, ...] = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    tv_lams: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    gpu_training: bool = False  # bf16 autocast, channels-last and torch.compile as the gpu preset sets them
    # loss.hidden_weight of the ambient prior trained in the run (docs/design.md §5; 1: the plain ambient loss;
    # "auto": 1 / P(A observed an entry Ã hid), estimated from the training records)
    hidden_weight: float | str = "auto"


PRESETS = {
    "cpu": Preset(
        train_volumes=48, test_volumes=4, slices=12, recon_size=128, resolution=64, test_slices=4,
        network={"model_channels": 16, "channel_mult": [1, 2, 2], "num_blocks": 1, "attn_levels": [],
                 "mid_attention": True},
        steps=800, batch_size=16, ema_halflife_images=5_000,
        # the shipped r4 card's earlier setting (it now takes 20 steps and forward-only guidance below σ 0.1, measured
        # on the shipped prior only) for the in-run prior: on the 16 test slices (R = 4 / 8) PSNR 18.58 / 17.04,
        # SSIM 0.464 / 0.356 against 18.60 / 17.05, 0.459 / 0.350 with reconstruct()'s 48 steps from σ 80, in half
        # the network calls (16 steps: 18.37 at R = 4; issue #21)
        dps_defaults={"steps": 24, "sigma_max": 10.0, "options": {"step_dc": "prox"}},
        # the inpainting part of the loss weighted as in a clean loss (R = 4, 20 % dropped: ~1 / 0.045); the learning
        # curves' knee point at 10,000 images: A-DPS 20.69 / 18.61 dB against 18.68 / 17.25 with the plain loss
        hidden_weight=20.0,
    ),
    "gpu": Preset(  # defined once in pipelines/gpu_preset.py (issue #20)
        train_volumes=0, test_volumes=0, slices=0, recon_size=GPU_DATA["recon_size"][0], resolution=None,
        test_slices=GPU_SAMPLING["test_slices"], network={k: v for k, v in GPU_NETWORK.items() if k != "kind"},
        steps=GPU_TRAIN["images"] // GPU_TRAIN["batch_size"], batch_size=GPU_TRAIN["batch_size"], lr=GPU_TRAIN["lr"],
        ema_halflife_images=GPU_TRAIN["ema_halflife_images"], warmup_images=GPU_TRAIN["warmup_images"],
        dps_samples=GPU_SAMPLING["dps_samples"], dps_steps=GPU_SAMPLING["dps_steps"], gpu_training=True,
    ),
    "quick": Preset(
        train_volumes=2, test_volumes=1, slices=2, recon_size=32, resolution=16, test_slices=2,
        network={"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_levels": [],
                 "mid_attention": False},
        steps=3, batch_size=4, dps_samples=2, dps_steps=4, one_step_draws=2, l1_lams=(1e-3,), tv_lams=(),
        cg_lams=(1e-2,),
    ),
}  # fmt: skip


def _torchrun_rank() -> int:
    return int(os.environ.get("RANK", "0"))


# -- data ---------------------------------------------------------------------------------------------
def source_volumes(
    out: str | Path,
    preset: Preset,
    *,
    data: str | Path | None = None,
    seed: int = 0,
    with_train: bool = True,
    coils: int | None = None,
    log: Callable[[str], None] = print,
    workers: int | None = 1,
) -> tuple[list[Path], list[Path]]:
    """``(train files, test files)``: the fastMRI ``.h5`` files in ``data`` (the last 20 % held out), or, with
    ``data=None``, synthetic volumes of ``preset`` cached under ``<out>/data/synthetic`` (train volumes seeded
    with ``seed``, test volumes with ``10_000 + seed``; none for training when ``with_train`` is false),
    single-coil or, with ``coils``, multi-coil with that many birdcage coils (the same phantoms); written by
    :func:`write_volumes` in ``workers`` processes (default 1: this one)."""
    if data and coils is not None:
        raise ValueError(
            f"coils={coils} (--coils) applies to the synthetic volumes; the files in {data} carry their own"
        )
    if data:
        files = sorted(Path(data).glob("*.h5"))
        if len(files) < 2:
            raise FileNotFoundError(f"--data {data}: expected at least 2 fastMRI .h5 volumes, found {len(files)}")
        n_test = max(1, len(files) // 5)
        return files[:-n_test], files[-n_test:]
    root = Path(out) / "data" / "synthetic"
    sizes = {"recon_size": (preset.recon_size, preset.recon_size), "num_slices": preset.slices, "num_coils": coils}
    splits = {"train": (preset.train_volumes if with_train else 0, seed), "test": (preset.test_volumes, 10_000 + seed)}
    result = []
    for name, (count, split_seed) in splits.items():
        if count == 0:
            result.append([])
            continue
        folder = root / (f"{name}-{preset.recon_size}px-{preset.slices}sl" + (f"-{coils}coils" if coils else ""))
        files = sorted(folder.glob("*.h5"))
        if len(files) != count:  # build once, then reuse from the cache
            log(f"writing {count} SYNTHETIC knee volumes to {folder}")
            files = write_volumes(folder, count, seed=split_seed, workers=workers, **sizes)
        result.append(files)
    return result[0], result[1]


def write_volumes(folder: str | Path, count: int, *, seed: int, workers: int | None = 1, **sizes) -> list[Path]:
    """:func:`~ambient_science.datasets.synthetic_knee.write_synthetic_knee_dataset` (``sizes``: its keywords) in
    ``workers`` processes (``None``: torch's intra-op threads, i.e. the free cores of
    :func:`~ambient_science.threads.configure_threads`); the same files, each volume drawn from its own seed
    ``seed + i``. One worker (or fewer than 4 volumes): in this process. More need a script's ``if __name__ ==
    "__main__":`` guard (spawned workers re-import it). Each worker first imports the library (about 3 s of CPU);
    on the example's 52 volumes (about 1.1 s of CPU each) two workers on two idle cores save about 25 s of wall
    time (8 volumes, a loaded machine: 9.4 CPU-s in this process against 15.7 in two workers)."""
    folder = Path(folder)
    workers = torch.get_num_threads() if workers is None else int(workers)
    workers = max(1, min(workers, count // 2))
    if workers == 1:
        return write_synthetic_knee_dataset(folder, count, seed=seed, overwrite=True, **sizes)
    paths = [folder / f"synthetic_knee_{seed + i:05d}.h5" for i in range(count)]  # the dataset writer's names
    context = multiprocessing.get_context("spawn")  # no fork of a process whose OpenMP threads may be running
    with ProcessPoolExecutor(workers, mp_context=context, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        jobs = [pool.submit(write_synthetic_knee, p, seed + i, overwrite=True, **sizes) for i, p in enumerate(paths)]
        return [Path(job.result()) for job in jobs]


def prepare_volumes(
    files: Sequence[Path],
    path: str | Path,
    *,
    acceleration: int,
    resolution: int | None,
    seed: int,
    targets: bool,
    rank: int = 0,
) -> Path:
    """The measurement file ``path`` of ``files`` undersampled at ``acceleration`` on the ``resolution`` grid
    (:func:`~ambient_science.datasets.prepare.prepare_fastmri`, noise std estimated); with ``targets``, also the
    fully sampled reference :func:`~ambient_science.pipelines.mri_eval.targets_path`. Written once, by rank 0
    (an existing file is reused); the other torchrun ranks wait for it."""
    path = Path(path)
    if rank != 0:
        while not path.exists():
            time.sleep(1.0)
    elif not path.exists():
        prepare_fastmri(
            files,
            path,
            acceleration=acceleration,
            center_fraction=CENTER_FRACTION.get(acceleration, 0.08),
            resolution=resolution,
            seed=seed,
            sigma_n="auto",
            targets_output=targets_path(path) if targets else None,
        )
    return path


# -- priors -------------------------------------------------------------------------------------------
def train_prior(
    data: str | Path,
    run_dir: str | Path,
    preset: Preset,
    *,
    steps: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    clean: bool = False,
    progress: bool = True,
    resume: bool = False,
) -> tuple[Prior, dict[str, Any]]:
    """Train a prior on the measurement file ``data`` with ``preset``'s network and budget (``steps`` overrides
    its steps; ``clean``: no further corruption, so the loss is EDM's) into ``run_dir``; four checkpoints.

    Returns the EMA prior and its budget ``{"source", "steps", "images_seen", "seconds"}``. Under torchrun every
    rank calls it (DDP).
    """
    steps = steps or preset.steps
    config = RunConfig(
        data=DataConfig(path=str(data)),
        family={"drop_fraction": 0.0} if clean else {},
        network=dict(preset.network),
        loss=LossConfig(kind="auto", hidden_weight=1.0 if clean else preset.hidden_weight),
        train=TrainConfig(
            out_dir=str(run_dir),
            steps=steps,
            batch_size=preset.batch_size,
            lr=preset.lr,
            warmup_images=preset.warmup_images,
            ema_halflife_images=preset.ema_halflife_images,
            checkpoint_every=max(steps // 4, 1),
            sample_every=0,
            seed=seed,
            device=str(device),
            progress=progress,
            resume="auto" if resume else "",
            **({k: GPU_TRAIN[k] for k in ("bf16", "channels_last", "compile")} if preset.gpu_training else {}),
        ),
    )
    t0 = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - t0
    prior = load_prior(result.checkpoint, map_location=device)
    info = {"source": f"trained in this run ({run_dir})", "steps": result.step, "images_seen": result.images_seen}
    return prior, {**info, "seconds": round(seconds, 1)}


def shipped_prior_fits(preset: str, data: str | Path | None, coils: int | None = None) -> bool:
    """Whether the shipped knee priors fit a run: built-in single-coil synthetic data (``data=None``,
    ``coils=None``) at the ``cpu`` preset."""
    return data is None and preset == "cpu" and coils is None


def shipped_prior(
    name: str, preset: str, *, data: str | Path | None = None, coils: int | None = None,
    device: torch.device | str = "cpu", log: Callable[[str], None] = print,
) -> tuple[Prior, dict[str, Any]] | None:  # fmt: skip
    """The shipped prior ``name`` and its budget (:func:`ambient_science.pretrained.budget`) when it fits the run
    (:func:`shipped_prior_fits`), else None (and a line to ``log`` saying why)."""
    if not shipped_prior_fits(preset, data, coils):
        if coils is None:
            log(f"shipped prior {name} skipped: it was trained on the built-in synthetic data at the cpu preset's grid")
        else:
            log(f"shipped prior {name} skipped: it was trained on single-coil synthetic data; this run's volumes have "
                f"{coils} coils, so only a prior trained on them (in this run, or --prior) is evaluated")  # fmt: skip
        return None
    return pretrained.load(name, map_location=device), pretrained.budget(name)


def prior_label(prior: Prior) -> str:
    """The rows' prefix of the shipped / ``--prior`` prior: ``"em"`` for one trained by EM (``train.method``),
    else ``"ambient"``."""
    return "em" if ((prior.config or {}).get("train") or {}).get("method") == "em" else "ambient"


# -- the whole run ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KneeRun:
    """One run of the knee experiment (the options of ``examples/mri_knee.py``).

    Priors evaluated, by label (rows ``<prefix>_one_step<suffix>``, ``<prefix>_dps<suffix>``):
    ``ambient`` (``em`` for a prior trained by EM, :func:`prior_label`) = ``prior`` (a checkpoint or exported
    prior) or else the shipped ``mri-knee-synthetic-r4`` (``use_shipped``, when it fits); ``ambient_this_run`` =
    trained here at ``acceleration`` (``train_here``);
    with ``clean_baseline``: ``clean`` (shipped ``mri-knee-synthetic-clean``) and ``clean_this_run`` (trained
    here on fully sampled images, same network and budget). ``coils``: multi-coil synthetic volumes with that
    many coils (ESPIRiT maps, SENSE; no shipped prior fits them, so the in-run prior is the one evaluated).
    ``rank``: torchrun's ``RANK`` (every rank trains, only rank 0 prepares files and evaluates). ``workers``:
    processes that write the synthetic volumes (:func:`write_volumes`; ``None``: one per free core, which needs
    the ``if __name__ == "__main__":`` guard of a script, as multiprocessing's spawn re-imports it).
    """

    out: str | Path = "runs/mri_knee"
    data: str | Path | None = None
    preset: str = "cpu"
    device: str = "auto"
    acceleration: int = 4
    test_accelerations: tuple[int, ...] = (4, 8)
    train_steps: int | None = None
    resume: bool = False
    prior: str | Path | None = None
    use_shipped: bool = True
    train_here: bool = True
    clean_baseline: bool = False
    inference_operator: str = "full"
    seed: int = 0
    progress: bool = True
    coils: int | None = None
    rank: int = field(default_factory=_torchrun_rank)
    workers: int | None = 1

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r}: expected one of {sorted(PRESETS)}")
        if self.inference_operator not in ("full", "law", "test"):
            raise ValueError(f"inference_operator {self.inference_operator!r}: expected 'full', 'law' or 'test'")
        if self.coils is not None and (
            isinstance(self.coils, bool) or not isinstance(self.coils, int) or self.coils < 1
        ):
            raise ValueError(f"coils {self.coils!r}: expected None (single-coil) or an integer >= 1")
        if self.coils is not None and self.data:
            raise ValueError(
                f"coils={self.coils} (--coils) applies to the synthetic volumes; the files in {self.data} carry "
                "their own coils"
            )
        if not self.train_here and not self.use_shipped:
            raise ValueError(
                "train_here=False (--no-training) with use_shipped=False (--train-only-here): no prior to evaluate"
            )
        if not self.train_here and self.prior is None and not shipped_prior_fits(self.preset, self.data, self.coils):
            raise ValueError(
                "no prior to evaluate: train_here=False (--no-training) and no shipped prior fits preset "
                f"{self.preset!r}{' with data=' + str(self.data) if self.data else ''}"
                f"{f' with coils={self.coils}' if self.coils is not None else ''}; pass prior= (--prior PATH)"
            )


def run(config: KneeRun, *, log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Prepare, train, evaluate every prior of ``config`` at every test acceleration; write ``metrics.json``
    and ``reconstructions.png`` under ``config.out`` (also the measurement files under ``data/`` and the
    training runs under ``train/``, ``train_clean/``).

    Returns the metrics ``{"train": {"acceleration", "slices", "device", "synthetic", "dps_inference_operator",
    <label>: budget}, "test": {"<R>": {<method>: {"psnr", "ssim", "nmse"}}}, "stages": {<stage>: {"wall_s",
    "cpu_s"}}}`` (None on torchrun ranks > 0); ``stages`` times writing the volumes, preparing the files, training,
    each evaluation and the figure (CPU seconds over all threads, so up to threads × wall).
    """
    preset = PRESETS[config.preset]
    device = resolve_device(config.device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if device.type == "cpu":
        log(describe())
    stages: dict[str, dict[str, float]] = {}
    with timed(stages, "volumes"):
        train_files, test_files = source_volumes(
            out, preset, data=config.data, seed=config.seed, with_train=config.train_here, coils=config.coils,
            log=log, workers=config.workers,
        )  # fmt: skip
    data_dir = out / "data"
    res = f"{preset.resolution or 'full'}" + (f"_{config.coils}coils" if config.coils is not None else "")
    training = {"steps": config.train_steps, "seed": config.seed, "device": device, "progress": config.progress,
                "resume": config.resume}  # fmt: skip

    def prepared(files, name: str, acceleration: int, seed: int, targets: bool) -> Path:
        return prepare_volumes(files, data_dir / name, acceleration=acceleration, resolution=preset.resolution,
                               seed=seed, targets=targets, rank=config.rank)  # fmt: skip

    if config.train_here and not config.resume and list_checkpoints(out / "train" / "checkpoints"):
        # a second run of the same example: continue (or, when finished, reuse) its training, never write over it
        log(f"{out / 'train'} already holds this example's training run: continuing it (reused as is when finished);"
            " pass --out DIR for a fresh run")  # fmt: skip
        training["resume"] = True
    train_file = None
    priors: dict[str, Prior] = {}
    train_info: dict[str, dict] = {}
    if config.train_here:  # every torchrun rank trains (DDP); only rank 0 evaluates
        with timed(stages, "prepare"):
            train_file = prepared(train_files, f"train_r{config.acceleration}_{res}.h5", config.acceleration,
                                  config.seed, False)  # fmt: skip
        with timed(stages, "train"):
            priors["ambient_this_run"], train_info["ambient_this_run"] = train_prior(
                train_file, out / "train", preset, **training
            )
    if config.prior:
        prior = load_prior(config.prior, map_location=device)
        label = prior_label(prior)
        priors[label], train_info[label] = prior, {"source": str(config.prior)}
    elif config.use_shipped and (
        shipped := shipped_prior(
            "mri-knee-synthetic-r4", config.preset, data=config.data, coils=config.coils, device=device, log=log
        )
    ):
        label = prior_label(shipped[0])
        priors[label], train_info[label] = shipped
    if config.clean_baseline:  # fully sampled images, same network and budget
        shipped = None
        if config.use_shipped:
            shipped = shipped_prior(
                "mri-knee-synthetic-clean", config.preset, data=config.data, coils=config.coils, device=device, log=log
            )
        if shipped is not None:
            priors["clean"], train_info["clean"] = shipped
        if config.train_here:
            clean_file = prepared(train_files, f"train_r1_{res}.h5", 1, config.seed, False)
            priors["clean_this_run"], train_info["clean_this_run"] = train_prior(
                clean_file, out / "train_clean", preset, clean=True, **training
            )
    if config.rank != 0:
        return None

    test, figure = {}, {}
    l1_lams = preset.l1_lams
    if config.coils is not None:  # ill-conditioned SENSE: the best L1 λ lay at 3e-2 (R = 4) and >= 1e-1 (R = 8)
        l1_lams = (*l1_lams, 3e-2, 1e-1, 3e-1)
    with timed(stages, "prepare"):
        test_paths = {R: prepared(test_files, f"test_r{R}_{res}.h5", R, config.seed + 1, True)
                      for R in config.test_accelerations}  # fmt: skip

    def evaluate_at(R: int):
        return evaluate(
            priors, test_paths[R], test_slices=preset.test_slices, l1_lams=l1_lams, tv_lams=preset.tv_lams,
            one_step_draws=preset.one_step_draws, dps_samples=preset.dps_samples, dps_steps=preset.dps_steps,
            inference_operator=config.inference_operator, seed=config.seed, device=device,
            progress=config.progress, cg_lams=preset.cg_lams, dps_defaults=preset.dps_defaults,
        )  # fmt: skip

    accelerations = tuple(config.test_accelerations)
    retune(every=0.0)  # an automatic thread count from the load seen since the training (no-op when fixed)
    threads = torch.get_num_threads()
    if device.type == "cpu" and threads > 1 and len(accelerations) > 1:
        # one evaluation per free core, side by side (issue #21): a batch of 16 small images keeps one core busy,
        # not two, so on two cores the accelerations in two threads of one intra-op thread each take about half the
        # wall time of one after the other; the same results (own generators, one thread each)
        with timed(stages, "evaluate R=" + "+".join(map(str, accelerations))):
            results = dict(zip(accelerations, side_by_side(evaluate_at, accelerations, threads)))
    else:
        results = {}
        for R in accelerations:
            with timed(stages, f"evaluate R={R}"):
                results[R] = evaluate_at(R)
    for R, (metrics_R, images_R) in results.items():
        test[str(R)], figure[R] = metrics_R, images_R
    metrics = {
        "train": {
            "acceleration": config.acceleration,
            "slices": None if train_file is None else len(MeasurementFile(train_file)),
            "device": str(device),
            "synthetic": config.data is None,
            "dps_inference_operator": config.inference_operator,
            **({"coils": config.coils} if config.coils is not None else {}),  # multi-coil synthetic runs only
            **train_info,  # per prior label: source, steps, images_seen, seconds
        },
        "test": test,
    }
    with timed(stages, "figure"):
        save_figure(out / "reconstructions.png", figure, "shipped prior" if config.prior is None else "--prior")
    metrics["stages"] = stages
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    times = (f"{k} {v['wall_s']:.0f} / {v['cpu_s']:.0f} @ {v['threads']}" for k, v in stages.items())
    log("stage times, wall / CPU seconds (CPU: all threads and worker processes) @ threads: " + "; ".join(times))
    return metrics
