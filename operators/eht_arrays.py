"""Station tables of VLBI arrays: names, geocentric positions and SEFDs, read from a plain text format.

The text format (the one ehtim's ``arrays/*.txt`` also use): ``#`` starts a comment; every other line is
``NAME X Y Z SEFD_R SEFD_L [more columns ...]`` with ITRF X, Y, Z in metres and the system-equivalent
flux densities of the two circular polarisations in Jy. Further columns (feed angles, D-terms) are
ignored; a line with a single SEFD column uses it for both polarisations.

Bundled tables (``operators/arrays/*.txt``): ``eht2017``, ``eht2017_m87`` (the 2017 M87* SEFDs) and
``eht2025`` (a larger EHT 2025-like array).

>>> from ambient_science.operators.eht_arrays import load_array
>>> table = load_array("eht2017")
>>> table.names[:3], len(table)
(['PV', 'SMT', 'SMA'], 8)
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["ARRAY_NAMES", "StationTable", "load_array", "read_array", "resolve_array", "write_array"]

ARRAY_NAMES = ("eht2017", "eht2017_m87", "eht2025")


@dataclass(frozen=True)
class StationTable:
    """An array of stations.

    Attributes:
        names: station names, ``S`` of them, unique.
        xyz: ``(S, 3)`` geocentric ITRF positions [m].
        sefd_r, sefd_l: ``(S,)`` SEFDs of the right and left circular feeds [Jy].
    """

    names: list[str]
    xyz: np.ndarray
    sefd_r: np.ndarray
    sefd_l: np.ndarray

    def __post_init__(self):
        s = len(self.names)
        if s == 0:
            raise ValueError("a station table needs at least one station")
        if len(set(self.names)) != s:
            raise ValueError(f"station names must be unique, got {self.names}")
        if np.shape(self.xyz) != (s, 3) or np.shape(self.sefd_r) != (s,) or np.shape(self.sefd_l) != (s,):
            raise ValueError(f"station table: xyz must be ({s}, 3) and SEFDs ({s},)")
        if not (np.all(np.isfinite(self.xyz)) and np.all(self.sefd_r > 0) and np.all(self.sefd_l > 0)):
            raise ValueError("station table: positions must be finite and SEFDs positive")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def sefd(self) -> np.ndarray:
        """``(S,)`` geometric-mean SEFD ``sqrt(SEFD_R SEFD_L)`` [Jy]."""
        return np.sqrt(self.sefd_r * self.sefd_l)

    def index(self, name: str) -> int:
        """Position of a station by name (case-sensitive)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"station {name!r} is not in the table {self.names}") from None

    def subset(self, names: list[str]) -> StationTable:
        """The table restricted to ``names`` (in that order)."""
        idx = [self.index(n) for n in names]
        return StationTable([self.names[i] for i in idx], self.xyz[idx], self.sefd_r[idx], self.sefd_l[idx])


def _parse(text: str, where: str) -> StationTable:
    names, xyz, sr, sl = [], [], [], []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cols = line.split()
        if len(cols) < 5:
            raise ValueError(f"{where}:{lineno}: expected 'NAME X Y Z SEFD_R [SEFD_L ...]', got {raw.strip()!r}")
        try:
            vals = [float(c) for c in cols[1:6]]
        except ValueError:
            raise ValueError(f"{where}:{lineno}: non-numeric position or SEFD in {raw.strip()!r}") from None
        names.append(cols[0])
        xyz.append(vals[:3])
        sr.append(vals[3])
        sl.append(vals[4] if len(vals) > 4 else vals[3])
    if not names:
        raise ValueError(f"{where}: no station lines found")
    return StationTable(names, np.asarray(xyz, dtype=np.float64), np.asarray(sr), np.asarray(sl))


def read_array(path: str | Path) -> StationTable:
    """Read a station table from a text file in the common format (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"station table {path} does not exist")
    return _parse(path.read_text(), str(path))


def load_array(name: str) -> StationTable:
    """A bundled station table by name: one of :data:`ARRAY_NAMES` (case-insensitive)."""
    key = name.lower()
    if key not in ARRAY_NAMES:
        raise ValueError(f"unknown array {name!r}; bundled arrays: {list(ARRAY_NAMES)} (or pass a file path)")
    text = resources.files("ambient_science.operators").joinpath("arrays", f"{key}.txt").read_text()
    return _parse(text, f"arrays/{key}.txt")


def resolve_array(array: str | Path | StationTable) -> StationTable:
    """A :class:`StationTable` from a table, a bundled name, or a path to a text file."""
    if isinstance(array, StationTable):
        return array
    if isinstance(array, str) and array.lower() in ARRAY_NAMES:
        return load_array(array)
    return read_array(array)


def write_array(table: StationTable, path: str | Path) -> Path:
    """Write a station table in the common text format."""
    path = Path(path)
    lines = [f"#{'NAME':<7s}{'X':>16s}{'Y':>16s}{'Z':>16s}{'SEFD_R':>10s}{'SEFD_L':>10s}"]
    for n, (x, y, z), r, l in zip(table.names, table.xyz, table.sefd_r, table.sefd_l):
        lines.append(f"{n:<8s}{x:16.4f}{y:16.4f}{z:16.4f}{r:10.1f}{l:10.1f}")
    path.write_text("\n".join(lines) + "\n")
    return path
