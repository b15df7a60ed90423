"""The Python snippets of the README's "Use the library" section run as written (each in a fresh interpreter,
in a scratch directory)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def snippets() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Use the library\n")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


def test_the_section_has_snippets():
    assert len(snippets()) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(snippets())))
def test_snippet_runs(index, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", snippets()[index]], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, f"README snippet {index} failed:\n{out.stderr[-3000:]}"
