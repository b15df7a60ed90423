"""Every CLI command against a table of bad inputs: exit code 2, one line on stderr naming the problem, no
traceback, and no file that existed before changed (SHA-256 of every file under the test's folders).

Each case builds its inputs in ``tmp_path`` (shared ones, a tiny trained run and a measurement file, come from
a module fixture and are checksummed too); a shipped prior is only ever damaged as a COPY. The library-level
defects of the same report (uvfits, operators) are in the second table. ``CASES`` + ``LIBRARY_CASES`` is the
count the README's reliability section quotes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ambient_science import pretrained
from ambient_science.cli import main
from ambient_science.datasets.measurements import save_measurements
from ambient_science.datasets.synthetic_knee import write_synthetic_knee_dataset
from ambient_science.operators import PixelMaskFamily

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "--set", "network.model_channels=8", "--set", "network.channel_mult=[1, 2]", "--set", "network.attn_levels=[]",
    "--set", "network.mid_attention=false", "--set", "train.batch_size=4", "--set", "train.progress=false",
    "--set", "train.sample_every=0", "--set", "train.warmup_images=0", "--device", "cpu",
]  # fmt: skip


# ------------------------------------------------------------------------------------------------------------
# shared inputs (module scope) and checksums
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """A measurement file (pixel masks, σ_n = 0.05), a 1-step training run on it, a synthetic fastMRI volume."""
    root = tmp_path_factory.mktemp("shared")
    family = PixelMaskFamily((1, 8, 8), p=0.4, delta=0.2)
    g = torch.Generator().manual_seed(0)
    A = family.sample(8, generator=g)
    save_measurements(root / "m.h5", A(0.5 * torch.randn(8, 1, 8, 8, generator=g)), A.params(), family, sigma_n=0.05)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    assert main(["train", "--data", str(root / "m.h5"), "--out-dir", str(root / "run"), "--steps", "1", *TINY]) == 0
    torch.set_num_threads(threads)
    write_synthetic_knee_dataset(root / "knee", 1, seed=3, num_slices=1, recon_size=(16, 16))
    (root / "train.toml").write_text("[train]\nsteps = 2\n")
    return root


def _checksums(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _raw_h5(path: Path, **datasets) -> Path:
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f.create_dataset(name, data=value)
    return path


def _kspace(shape=(1, 16, 16), dtype=np.complex64) -> np.ndarray:
    rng = np.random.default_rng(0)
    k = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return k.astype(dtype) if np.issubdtype(dtype, np.complexfloating) else k.real.astype(dtype)


def _copy_run(shared: Path, tmp: Path) -> Path:
    run = tmp / "run"
    shutil.copytree(shared / "run", run)
    return run


def _ckpt(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


def _copy_prior(tmp: Path, name: str = "mri-knee-synthetic-r4") -> Path:
    dest = tmp / "prior"
    shutil.copytree(pretrained.path(name), dest)
    return dest


def _flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------------------------
# the CLI table: name -> (build(tmp, shared) -> argv, words the one line must contain)
# ------------------------------------------------------------------------------------------------------------

Build = Callable[[Path, Path], list[str]]


def _train_config(text: str, suffix: str = ".toml") -> Build:
    def build(tmp: Path, shared: Path) -> list[str]:
        (tmp / f"c{suffix}").write_text(text)
        return ["train", str(tmp / f"c{suffix}"), "--data", str(shared / "m.h5"), "--dry-run"]

    return build


def _train(*extra: str) -> Build:
    return lambda tmp, shared: ["train", "--data", str(shared / "m.h5"), *extra, "--dry-run"]


def _train_run(setup: Callable[[Path, Path], list[str]]) -> Build:
    return lambda tmp, shared: ["train", "--data", str(shared / "m.h5"), *TINY, "--steps", "2", *setup(tmp, shared)]


def _edited_config(tmp: Path, shared: Path) -> list[str]:
    run = _copy_run(shared, tmp)
    cfg = _ckpt(run) / "config.json"
    cfg.write_text(cfg.read_text().replace('"lr": 0.0002', '"lr": 0.0003'))
    return ["--out-dir", str(run), "--resume"]


def _corrupt_weights(tmp: Path, shared: Path) -> list[str]:
    run = _copy_run(shared, tmp)
    w = _ckpt(run) / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    return ["--out-dir", str(run), "--resume"]


def _nan_measurements(tmp: Path, shared: Path) -> list[str]:
    family = PixelMaskFamily((1, 8, 8), p=0.4)
    A = family.sample(4, generator=torch.Generator().manual_seed(1))
    save_measurements(tmp / "nan.h5", A(torch.randn(4, 1, 8, 8)), A.params(), family)
    with h5py.File(tmp / "nan.h5", "r+") as f:
        f["y"][0, 0, 0, 0] = np.nan  # edited after writing (save_measurements refuses NaN)
    return ["train", "--data", str(tmp / "nan.h5"), *TINY, "--steps", "1", "--out-dir", str(tmp / "out")]


def _fastmri(make: Callable[[Path], Path | str], *extra: str) -> Build:
    return lambda tmp, shared: ["prepare", "fastmri", str(make(tmp)), "-o", str(tmp / "out.h5"), *extra]


def _reconstruct(checkpoint=None, measurements=None, out=None, *extra: str) -> Build:
    def build(tmp: Path, shared: Path) -> list[str]:
        ck = checkpoint(tmp, shared) if checkpoint else str(shared / "run")
        me = measurements(tmp, shared) if measurements else str(shared / "m.h5")
        ou = out(tmp, shared) if out else str(tmp / "recon")
        return ["reconstruct", "--checkpoint", ck, "--measurements", me, "--out", ou, "--no-progress", *extra]

    return build


def _existing_recon(tmp: Path, shared: Path) -> str:
    (tmp / "recon").mkdir()
    (tmp / "recon" / "reconstructions.h5").write_bytes(b"an earlier result")
    return str(tmp / "recon")


def _flipped_prior(tmp: Path, shared: Path) -> str:
    prior = _copy_prior(tmp)
    _flip_byte(prior / "weights.safetensors")
    return str(prior)


def _broken_prior_json(tmp: Path, shared: Path) -> str:
    prior = _copy_prior(tmp)
    (prior / "prior.json").write_text((prior / "prior.json").read_text()[:-40])
    return str(prior)


def _not_hdf5(tmp: Path, name: str = "notes.h5") -> Path:
    (tmp / name).write_text("this is not an HDF5 file\n")
    return tmp / name


def _export(run=None, *extra: str) -> Build:
    def build(tmp: Path, shared: Path) -> list[str]:
        r = run(tmp, shared) if run else str(shared / "run")
        return ["export-prior", r, "--name", "toy", "--kind", "ambient", "--config", str(shared / "train.toml"),
                "--commit", "abc", "--out-root", str(tmp / "priors"), *extra]  # fmt: skip

    return build


def _existing_prior(tmp: Path, shared: Path) -> str:
    (tmp / "priors" / "toy").mkdir(parents=True)
    (tmp / "priors" / "toy" / "prior.json").write_text("{}")
    return str(shared / "run")


def _audit(samples: Callable[[Path], Path], training: Callable[[Path], Path], *extra: str) -> Build:
    return lambda tmp, shared: ["audit", "--samples", str(samples(tmp)), "--training", str(training(tmp)),
                                "--out", str(tmp / "audit"), "--no-plots", *extra]  # fmt: skip


def _npy(shape, name: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        np.save(tmp / name, np.zeros(shape, dtype=np.float32))
        return tmp / name

    return make


def _earlier_audit(tmp: Path) -> Path:
    (tmp / "audit").mkdir()
    (tmp / "audit" / "audit.json").write_text("{}")
    return _npy((3, 8, 8), "s.npy")(tmp)


CASES: dict[str, tuple[Build, tuple[str, ...]]] = {
    # 1. config values: type and range, by file and by --set
    "config compile = 'no'": (_train_config('[train]\ncompile = "no"\n'), ("train.compile", "'no'", "true or false")),
    "config bf16 = 'false'": (_train_config('[train]\nbf16 = "false"\n'), ("train.bf16", "true or false")),
    "config steps = 'ten'": (_train_config('[train]\nsteps = "ten"\n'), ("train.steps", "'ten'", "integer")),
    "config steps = 3.7": (_train_config("[train]\nsteps = 3.7\n"), ("train.steps", "3.7", "integer")),
    "config model_channels = 8.5": (_train_config("[network]\nmodel_channels = 8.5\n"), ("network.model_channels",)),
    "config steps = 0": (_train_config("[train]\nsteps = 0\n"), ("train.steps", ">= 1")),
    "config lr = -1": (_train_config("[train]\nlr = -1.0\n"), ("train.lr", "> 0")),
    "config [train] not a table": (_train_config("train = 3\n"), ("[train]", "table")),
    "config unknown key": (_train_config("[train]\nlrr = 1\n"), ("lrr", "[train]")),
    "config unknown [family] key": (_train_config("[family]\ndeltaa = 0.1\n"), ("deltaa", "[family]")),
    "config [family] bad value": (_train_config('[family]\ndelta = "lots"\n'), ("[family]", "lots")),
    "config broken TOML": (_train_config("[train\nsteps = 2\n"), ("c.toml", "invalid TOML")),
    "config broken JSON": (_train_config('{"train": {"steps": 2', ".json"), ("c.json", "JSON")),
    "config file missing": (lambda t, s: ["train", str(t / "nope.toml")], ("nope.toml", "does not exist")),
    "--set train.compile=no": (_train("--set", "train.compile=no"), ("train.compile", "true or false")),
    "--set train.steps=ten": (_train("--set", "train.steps=ten"), ("train.steps", "integer")),
    "--set without section": (_train("--set", "steps=3"), ("section.key=value",)),
    "--steps ten (argparse)": (_train("--steps", "ten"), ("--steps", "ten")),
    # 6. training data, checkpoints, resume
    "--data a directory": (lambda t, s: ["train", "--data", str(s), "--dry-run"], ("is a directory",)),
    "--data missing": (lambda t, s: ["train", "--data", str(t / "x.h5"), "--dry-run"], ("x.h5", "does not exist")),
    "--data not HDF5": (lambda t, s: ["train", "--data", str(_not_hdf5(t)), "--dry-run"], ("notes.h5", "HDF5")),
    "--data a fastMRI file": (
        lambda t, s: ["train", "--data", str(next((s / "knee").glob("*.h5"))), "--dry-run"],
        ("not an ambient-science measurement file",),
    ),
    "--resume with no checkpoint": (
        _train_run(lambda t, s: ["--out-dir", str(t / "fresh"), "--resume"]),
        ("nothing to resume", "--resume=auto"),
    ),
    "--resume missing path": (_train_run(lambda t, s: ["--resume", str(t / "nowhere")]), ("no checkpoint at",)),
    "existing run directory": (
        _train_run(lambda t, s: ["--out-dir", str(_copy_run(s, t))]),
        ("already holds checkpoints",),
    ),
    "edited checkpoint config.json": (_train_run(_edited_config), ("config.json", "edited")),
    "corrupt model.safetensors": (_train_run(_corrupt_weights), ("model.safetensors", "truncated or corrupt")),
    "NaN in measurements": (_nan_measurements, ("nan.h5", "NaN")),
    # 2. + fastMRI inputs
    "fastmri 0 slices": (
        _fastmri(lambda t: _raw_h5(t / "zero.h5", kspace=_kspace((0, 16, 16)))),
        ("zero.h5", "slices"),
    ),
    "fastmri missing kspace": (_fastmri(lambda t: _raw_h5(t / "nok.h5", image=np.zeros((2, 4)))), ("nok.h5", "kspace")),
    "fastmri wrong rank": (_fastmri(lambda t: _raw_h5(t / "r2.h5", kspace=_kspace((16, 16)))), ("r2.h5", "2-D")),
    "fastmri real dtype": (
        _fastmri(lambda t: _raw_h5(t / "real.h5", kspace=_kspace(dtype=np.float32))),
        ("real.h5", "float32", "complex64"),
    ),
    "fastmri NaN k-space": (
        _fastmri(lambda t: _raw_h5(t / "nan.h5", kspace=np.full((1, 16, 16), np.nan, np.complex64))),
        ("nan.h5", "NaN or Inf"),
    ),
    "fastmri Inf k-space": (
        _fastmri(lambda t: _raw_h5(t / "inf.h5", kspace=np.full((1, 16, 16), np.inf, np.complex64))),
        ("inf.h5", "NaN or Inf"),
    ),
    "fastmri empty directory": (_fastmri(lambda t: (t / "empty").mkdir() or t / "empty"), ("no fastMRI .h5 files",)),
    "fastmri not HDF5": (_fastmri(lambda t: _not_hdf5(t, "scan.h5")), ("scan.h5", "HDF5")),
    "fastmri missing input": (_fastmri(lambda t: t / "absent.h5"), ("absent.h5", "does not exist")),
    "fastmri existing output": (
        lambda t, s: ["prepare", "fastmri", str(s / "knee"), "-o", str(_not_hdf5(t, "out.h5"))],
        ("out.h5", "exists"),
    ),
    "fastmri --sigma-n -1": (_fastmri(lambda t: t / "x.h5", "--sigma-n", "-1"), ("--sigma-n",)),
    "fastmri --acceleration abc": (_fastmri(lambda t: t / "x.h5", "--acceleration", "abc"), ("--acceleration",)),
    "synthetic-knee existing output": (
        lambda t, s: ["prepare", "synthetic-knee", str(s / "knee"), *"--volumes 2 --seed 3 --slices 1".split()],
        ("synthetic_knee_00003.h5", "exists"),
    ),
    "black-holes existing output": (
        lambda t, s: ["prepare", "black-holes", str(_not_hdf5(t, "bh.h5")), "--records", "2"],
        ("bh.h5", "exists"),
    ),
    # 5. reconstruct
    "reconstruct missing checkpoint": (_reconstruct(lambda t, s: str(t / "nothing")), ("no checkpoint at",)),
    "reconstruct flipped byte in a prior (copy)": (_reconstruct(_flipped_prior), ("weights.safetensors", "SHA-256")),
    "reconstruct broken prior.json (copy)": (_reconstruct(_broken_prior_json), ("prior.json", "unreadable")),
    "reconstruct prior of another family": (
        _reconstruct(lambda t, s: str(pretrained.path("mri-knee-synthetic-r4-ambient"))),
        ("does not fit the measurements", "cartesian_mri", "pixel_mask"),
    ),
    "reconstruct measurements a directory": (_reconstruct(None, lambda t, s: str(t)), ("is a directory",)),
    "reconstruct measurements not HDF5": (_reconstruct(None, lambda t, s: str(_not_hdf5(t))), ("notes.h5", "HDF5")),
    "reconstruct existing output": (_reconstruct(None, None, _existing_recon), ("reconstructions.h5", "overwritten")),
    "reconstruct --indices 0:x": (_reconstruct(None, None, None, "--indices", "0:x"), ("--indices", "0:x")),
    "reconstruct --indices out of range": (_reconstruct(None, None, None, "--indices", "99"), ("--indices", "8")),
    "reconstruct --truth missing": (_reconstruct(None, None, None, "--truth", "/nonexistent/t.h5"), ("--truth",)),
    "reconstruct --truth without target": (
        lambda t, s: _reconstruct(None, None, None, "--truth", str(_raw_h5(t / "t.h5", x=np.zeros(2))))(t, s),
        ("t.h5", "'target'"),
    ),
    "reconstruct --num-samples 0": (_reconstruct(None, None, None, "--num-samples", "0"), ("--num-samples",)),
    "reconstruct --method bogus": (_reconstruct(None, None, None, "--method", "bogus"), ("--method", "bogus")),
    # export-prior, audit
    "export run without checkpoint": (_export(lambda t, s: str(t)), ("no checkpoint at",)),
    "export --config missing": (
        lambda t, s: [*_export()(t, s)[:-4], "--config", str(t / "none.toml")],
        ("--config", "none.toml"),
    ),
    "export existing prior": (_export(_existing_prior), ("toy", "exists")),
    "audit missing samples": (_audit(lambda t: t / "none.npy", _npy((3, 8, 8), "t.npy")), ("none.npy",)),
    "audit shape mismatch": (_audit(_npy((3, 8, 8), "s.npy"), _npy((3, 9, 9), "t.npy")), ("same shape",)),
    "audit existing output": (_audit(_earlier_audit, _npy((3, 8, 8), "t.npy")), ("audit.json", "--overwrite")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_cli_bad_input(name, shared, tmp_path, capsys):
    build, words = CASES[name]
    argv = build(tmp_path, shared)
    before = _checksums(tmp_path, shared)
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert rc == 2, f"{name}: exit {rc}, stderr {captured.err!r}"
    assert len(lines) == 1, f"{name}: expected one line on stderr, got {lines}"
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert lines[0].startswith(f"ambient-science {argv[0]}"), lines[0]
    for word in words:
        assert word in lines[0], f"{name}: {word!r} not in {lines[0]!r}"
    after = _checksums(tmp_path, shared)
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    assert not changed, f"{name}: files changed or removed: {changed}"


def test_debug_shows_the_traceback(shared, capsys):
    with pytest.raises(ValueError, match=r"train\.compile"):
        main(["train", "--set", "train.compile=no", "--dry-run", "--debug"])


@pytest.mark.slow
def test_real_subprocess_one_line_exit_2_and_debug_env(tmp_path):
    """The installed entry point: exit 2 and one line; AMBIENT_SCIENCE_DEBUG=1 shows the traceback."""
    exe = shutil.which("ambient-science")
    cmd = [exe] if exe else [sys.executable, "-c", "import sys; from ambient_science.cli import main; sys.exit(main())"]
    args = ["train", "--set", "train.compile=no", "--dry-run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("AMBIENT_SCIENCE_DEBUG", None)
    res = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        "ambient-science train: error: train.compile must be true or false, got 'no' (a string)"
    ]
    res = subprocess.run([*cmd, *args], capture_output=True, text=True, env={**env, "AMBIENT_SCIENCE_DEBUG": "1"},
                         cwd=tmp_path, timeout=300)  # fmt: skip
    assert res.returncode != 0 and "Traceback" in res.stderr


# ------------------------------------------------------------------------------------------------------------
# library-level defects of the same report: a clear error naming the file / value
# ------------------------------------------------------------------------------------------------------------


def _uvfits(tmp: Path) -> Path:
    from ambient_science.datasets.uvfits import Observation, write_uvfits

    obs = Observation(time=[0.0, 0.01, 0.5], t1=[0, 0, 1], t2=[1, 2, 2], u=[1e9, 1.01e9, 3e9], v=[2e9, 2e9, 1e9],
                      vis=[1 + 0j, 1 + 0.2j, 0.5j], sigma=[0.1, 0.1, 0.2], stations=["AA", "SM", "LM"],
                      ra_deg=187.7, dec_deg=12.39, mjd=57854)  # fmt: skip
    return write_uvfits(obs, tmp / "full.uvfits")


def _truncated_uvfits(size: Callable[[int], int]) -> Callable[[Path], None]:
    def run(tmp: Path) -> None:
        from ambient_science.datasets.uvfits import read_uvfits

        data = _uvfits(tmp).read_bytes()
        (tmp / "cut.uvfits").write_bytes(data[: size(len(data))])
        read_uvfits(tmp / "cut.uvfits")

    return run


def _nonbinary_mask(tmp: Path) -> None:
    from ambient_science.operators.mri import CartesianMRI

    m = torch.ones(2, 16)
    m[0, ::3] = 0.5
    CartesianMRI(m)


def _uvfits_without_position(tmp: Path) -> None:
    from ambient_science.datasets.uvfits import Observation, write_uvfits

    obs = Observation(time=[0.0], t1=[0], t2=[1], u=[1e9], v=[2e9], vis=[1 + 0j], sigma=[0.1], stations=["A", "B"])
    write_uvfits(obs, tmp / "sim.uvfits")


def _train_config_object(tmp: Path) -> None:
    from ambient_science.training.config import TrainConfig

    TrainConfig(compile="no", bf16="false")


LIBRARY_CASES: dict[str, tuple[Callable[[Path], None], type[BaseException], str]] = {
    "uvfits truncated to half": (_truncated_uvfits(lambda n: n // 2), ValueError, r"cut\.uvfits: truncated or corrupt"),
    "uvfits truncated in the header": (_truncated_uvfits(lambda n: 1000), ValueError, r"cut\.uvfits: truncated"),
    "uvfits truncated at a block boundary": (_truncated_uvfits(lambda n: 3 * 2880), ValueError, r"cut\.uvfits"),
    "uvfits empty": (_truncated_uvfits(lambda n: 0), ValueError, r"cut\.uvfits: truncated or corrupt"),
    "uvfits written without a position": (_uvfits_without_position, ValueError, "no ra_deg / dec_deg / mjd"),
    "CartesianMRI non-binary mask": (_nonbinary_mask, ValueError, r"binary.*0\.5"),
    "TrainConfig(compile='no', bf16='false')": (_train_config_object, ValueError, r"train\.\w+ must be true or false"),
}


@pytest.mark.parametrize("name", list(LIBRARY_CASES))
def test_library_bad_input(name, tmp_path):
    run, error, pattern = LIBRARY_CASES[name]
    with pytest.raises(error, match=pattern):
        run(tmp_path)


def test_the_suite_size():
    """The count quoted in the README (reliability section)."""
    assert len(CASES) + len(LIBRARY_CASES) >= 60
    print(json.dumps({"cli_cases": len(CASES), "library_cases": len(LIBRARY_CASES)}))
