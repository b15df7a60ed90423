"""Citations of the design page: every ``docs/design.md §N`` (or ``§N–§M``) in the repository's ``*.py``, ``*.md``
and ``*.toml`` files names a ``## N.`` section of docs/design.md, and no file cites the design notes the
repository does not carry."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
SKIP_DIRS = {".git", "runs", "build", "dist", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "shared"}
SUFFIXES = {".py", ".md", ".toml"}

# "docs/design.md §5", "docs/design.md §5–§8", "docs/design.md §5-8"
CITATION = re.compile(r"docs/design\.md\s*§\s*(\d+)(?:\s*[–-]\s*§?\s*(\d+))?")
# a section sign with nothing after it, e.g. "docs/design.md §" at a line end ("§N" as a placeholder is fine)
BROKEN = re.compile(r"docs/design\.md\s*§(?=\s|$|[).,;:])", re.MULTILINE)
# the upstream notes outside the repository (spelled in pieces so that this file does not cite them)
FOREIGN = re.compile(r"(?<![\w/.-])(?:" + "DESIGN" + r"|" + "STYLE" + r")\.md")


def _files() -> list[Path]:
    out = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts[:-1]):
            continue
        if path.suffix in SUFFIXES and path.is_file():
            out.append(path)
    return sorted(out)


def design_sections() -> dict[int, str]:
    """``N -> title`` of every ``## N. Title`` heading of docs/design.md."""
    found = {}
    for line in DESIGN.read_text(encoding="utf-8").splitlines():
        m = re.match(r"## (\d+)\. (.+)", line)
        if m:
            found[int(m.group(1))] = m.group(2).strip()
    return found


def citations(text: str) -> list[tuple[int, int, int]]:
    """``(line, first section, last section)`` of every citation in ``text``."""
    out = []
    for m in CITATION.finditer(text):
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) else first
        out.append((text.count("\n", 0, m.start()) + 1, first, last))
    return out


def test_design_sections_are_numbered_in_order():
    numbers = list(design_sections())
    assert numbers, "docs/design.md has no '## N. Title' sections"
    assert numbers == list(range(1, len(numbers) + 1)), f"docs/design.md sections are numbered {numbers}"


def test_every_citation_names_an_existing_section():
    sections = design_sections()
    bad, count = [], 0
    for path in _files():
        text = path.read_text(encoding="utf-8", errors="replace")
        rel = path.relative_to(ROOT)
        for line, first, last in citations(text):
            count += 1
            missing = [n for n in range(first, last + 1) if n not in sections]
            if first > last or missing:
                bad.append(f"{rel}:{line}: docs/design.md §{first}" + (f"–§{last}" if last != first else "")
                           + f" (sections: {sorted(sections)})")  # fmt: skip
        for m in BROKEN.finditer(text):
            bad.append(f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: a citation without a section number")
    assert not bad, "citations of missing sections of docs/design.md:\n" + "\n".join(bad)
    assert count > 0, "no file cites docs/design.md: the pattern is probably wrong"


def test_no_file_cites_notes_outside_the_repository():
    bad = []
    for path in _files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in FOREIGN.finditer(text):
            bad.append(f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}")
    assert not bad, "cite docs/design.md §N instead of notes the repository does not carry:\n" + "\n".join(bad)


def test_the_patterns(tmp_path):
    """A self-test of the citation parser."""
    text = "a (docs/design.md §5–§8)\nb docs/design.md §3.\nc docs/design.md §4-5"
    assert citations(text) == [(1, 5, 8), (2, 3, 3), (3, 4, 5)]
    assert FOREIGN.search("see " + "DESIGN" + ".md §2") and not FOREIGN.search("docs/design.md §2")
    assert BROKEN.search("docs/design.md §\n") and not BROKEN.search("docs/design.md §N")
