"""Sections of the benchmark report: a small dict layout (stored as JSON) and its Markdown rendering.

A section is ``{"title", "description", "columns": [[key, header], ...], "rows": [{key: value}], "skipped":
[str], "notes": [str], "targets": [target]}``. A row value ``v`` with a sibling ``"<key>_iqr": [q1, q3]`` is
printed as ``v (q1–q3)``. A target is ``{"name", "value", "op" (">=" or "<="), "threshold", "met", "detail"}``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["fmt", "render_section", "render_table", "section", "target"]


def section(title: str, description: str, columns: list[tuple[str, str]]) -> dict[str, Any]:
    """An empty section with its table columns ``(key, header)``."""
    return {
        "title": title,
        "description": description,
        "columns": [list(c) for c in columns],
        "rows": [],
        "skipped": [],
        "notes": [],
        "targets": [],
    }


def target(name: str, value: float, op: str, threshold: float, detail: str = "") -> dict[str, Any]:
    """A target check, ``value op threshold``."""
    met = bool(value >= threshold) if op == ">=" else bool(value <= threshold)
    return {"name": name, "value": value, "op": op, "threshold": threshold, "met": met, "detail": detail}


def fmt(v: Any) -> str:
    """Three significant digits for floats (no exponent below 1e6), ``–`` for missing values."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1e6 or abs(v) < 1e-3:
            return f"{v:.2e}"
        digits = max(0, 2 - math.floor(math.log10(abs(v))))
        return f"{v:.{digits}f}"
    return str(v)


def _cell(row: dict[str, Any], key: str) -> str:
    text = fmt(row.get(key))
    iqr = row.get(f"{key}_iqr")
    if iqr is not None and row.get(key) is not None:
        text += f" ({fmt(iqr[0])}–{fmt(iqr[1])})"
    return text.replace("|", "\\|")


def render_table(columns: list[list[str]], rows: list[dict[str, Any]]) -> str:
    """A Markdown table of ``rows`` over ``columns``."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r, k) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def render_section(sec: dict[str, Any], level: int = 2) -> str:
    """Markdown of one section: title, description, table, targets, skipped items, notes."""
    out = [f"{'#' * level} {sec['title']}", ""]
    if sec.get("description"):
        out += [sec["description"], ""]
    if sec.get("load_average_at_start") is not None:
        load = ", ".join(fmt(float(v)) for v in sec["load_average_at_start"])
        out += [
            f"_Ran {sec.get('started', '')} for {sec.get('seconds', 0):.0f} s; load average at its start {load}._",
            "",
        ]
    if sec.get("rows"):
        out += [render_table(sec["columns"], sec["rows"]), ""]
    for t in sec.get("targets", []):
        mark = "met" if t["met"] else "MISSED"
        out.append(
            f"- Target {t['name']}: {fmt(t['value'])} {t['op']} {fmt(t['threshold'])} — **{mark}**. {t['detail']}"
        )
    for s in sec.get("skipped", []):
        out.append(f"- Skipped: {s}")
    for n in sec.get("notes", []):
        out.append(f"- {n}")
    if sec.get("targets") or sec.get("skipped") or sec.get("notes"):
        out.append("")
    return "\n".join(out)
