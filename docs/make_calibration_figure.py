"""The calibration figure of README's black-hole section, from the out-of-family benchmark's results.

    python docs/make_calibration_figure.py docs/black_hole_out_of_family.json [MORE.json ...] \
        docs/black_hole_calibration.png

The cases of several results files of one prior and DAPS setting are pooled
(``pipelines.eht_calibration.pooled_cases``, as ``eht_out_of_family.py --write-card`` pools them). Per case:
the truth's ring diameter and PA against the kept samples' raw 68 % / 95 % intervals (thin / thick bars) and the
intervals widened by the card's split-conformal factors (``pipelines.eht_calibration.apply``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ambient_science.pipelines import eht_calibration


def main(results: list[Path], out: Path) -> None:
    cases = [c for c in eht_calibration.pooled_cases(results)[1] if c.get("calibration", {}).get("raw")]
    conformal = eht_calibration.cross_fit_coverage([c["calibration"] | {"split": c["split"]} for c in cases])
    fac = conformal.get("factors_all", conformal.get("factors", {}))
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 0.4 * len(cases) + 2), 3.6))
    for ax, q, unit in zip(axes, ("diameter_uas", "pa_deg"), ("µas", "deg")):
        for i, c in enumerate(cases):
            cal, truth = c["calibration"], c["calibration"]["truth"][q]
            raw = cal["raw"][q]
            f = fac.get(q) if isinstance(fac, dict) else None
            for dx, iv, col in ((-0.15, raw, "0.5"), (0.15, eht_calibration.apply(raw, f, q) if f else None, "C0")):
                if iv is None:
                    continue
                ax.plot([i + dx] * 2, [iv["lo95"], iv["hi95"]], color=col, lw=1)
                ax.plot([i + dx] * 2, [iv["lo68"], iv["hi68"]], color=col, lw=4)
            ax.plot(i, truth, "r_", ms=8, mew=2)
        labels = [f"{c['split'][:3]}/{c['track'][:3]}/i{c.get('image', '?')}s{c['seed']}" for c in cases]
        ax.set_xticks(range(len(cases)), labels, rotation=70, fontsize=7)
        ax.set_ylabel(f"{q.split('_')[0]} [{unit}]")
    axes[0].set_title("grey: raw 68/95 %, blue: calibrated, red: truth", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}; factors {fac}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit("usage: python docs/make_calibration_figure.py RESULTS.json [MORE.json ...] OUT.png")
    main([Path(a) for a in sys.argv[1:-1]], Path(sys.argv[-1]))
