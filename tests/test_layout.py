"""Packaging: every module ships in the wheel under the one ``ambient_science`` namespace (docs/design.md §2)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "ambient_science": "ambient_science",
    "operators": "ambient_science/operators",
    "datasets": "ambient_science/datasets",
}


def _source_modules() -> set[str]:
    found = set()
    for folder, installed in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            found.add(f"{installed}/{path.relative_to(ROOT / folder).as_posix()}")
    return found


def test_folders_are_flat():
    """Setuptools' package-dir mapping lists packages explicitly: a subpackage would be left out."""
    for folder in ("operators", "datasets"):
        subpackages = [p for p in (ROOT / folder).iterdir() if p.is_dir() and (p / "__init__.py").exists()]
        assert not subpackages, f"{folder}/ must stay flat, found subpackages {subpackages}"


@pytest.mark.slow
def test_wheel_contains_every_module(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("ambient_science-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = _source_modules() - names
    assert not missing, f"modules missing from the wheel: {sorted(missing)}"
    assert not any(n.startswith(("operators/", "datasets/")) for n in names), "bare top-level packages shipped"
    shipped = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "ambient_science" / "pretrained").glob("*/*")
        if p.name in ("weights.safetensors", "prior.json")
    }
    assert shipped <= names, f"shipped priors missing from the wheel: {sorted(shipped - names)}"


def test_bare_folder_names_are_not_importable_from_outside(tmp_path):
    code = (
        "import importlib.util, sys\n"
        "for name in ('operators', 'datasets'):\n"
        "    spec = importlib.util.find_spec(name)\n"
        f"    assert spec is None or not str(spec.origin).startswith({str(ROOT)!r}), name\n"
        "from ambient_science.operators import PixelMask\n"
        "import ambient_science.datasets\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
