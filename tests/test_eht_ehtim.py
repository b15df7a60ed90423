"""Cross-check against ehtim (optional, GPLv3: only its numbers are compared). Skipped when ehtim is missing.

pip install 'ambient-science[crosscheck]'   # then: pytest tests/test_eht_ehtim.py
"""

import warnings

import numpy as np
import pytest
import torch

from ambient_science.operators.closure import (
    chisq_amp,
    chisq_vis,
    closure_data,
    closure_index,
    closure_phase_sigmas,
    closure_phases,
    debias_amplitudes,
)
from ambient_science.operators.eht_arrays import load_array
from ambient_science.operators.interferometry import Interferometer, uas_to_rad
from ambient_science.operators.uvcoverage import observe_coverage

pytestmark = pytest.mark.slow  # importing ehtim alone takes seconds

RA_DEG, DEC_DEG, MJD = 187.7059, 12.3911, 57854
NPIX, PSIZE = 32, uas_to_rad(5.0)
EHT2017_SEFD = load_array("eht2017").sefd
OBS = {"tstart_hr": 0.0, "duration_hr": 24.0, "tadv_s": 1800.0, "tint_s": 10.0, "bw_hz": 2e9}


def _image():
    yy, xx = np.mgrid[:NPIX, :NPIX]
    img = np.exp(-((xx - 14.0) ** 2 + (yy - 12.0) ** 2) / 20.0) + 0.5 * np.exp(-((xx - 20) ** 2 + (yy - 19) ** 2) / 8.0)
    return 0.6 * img / img.sum()


@pytest.fixture(scope="module")
def eht(tmp_path_factory):
    eh = pytest.importorskip("ehtim")
    table = load_array("eht2017")
    path = tmp_path_factory.mktemp("ehtim") / "eht2017.txt"
    rows = [
        f"{n} {x:.4f} {y:.4f} {z:.4f} {r:.1f} {l:.1f} 1 0 0 0 0 0 0"
        for n, (x, y, z), r, l in zip(table.names, table.xyz, table.sefd_r, table.sefd_l)
    ]
    path.write_text("#NAME X Y Z SEFDR SEFDL FR_PAR FR_EL FR_OFF DR_RE DR_IM DL_RE DL_IM\n" + "\n".join(rows) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = eh.array.load_txt(str(path))
        template = arr.obsdata(
            RA_DEG / 15.0,
            DEC_DEG,
            230e9,
            OBS["bw_hz"],
            OBS["tint_s"],
            OBS["tadv_s"],
            OBS["tstart_hr"],
            OBS["tstart_hr"] + OBS["duration_hr"],
            mjd=MJD,
            timetype="UTC",
            elevmin=10.0,
            elevmax=85.0,
        )
        im = eh.image.Image(_image(), PSIZE, RA_DEG / 15.0, DEC_DEG, rf=230e9, mjd=MJD, source="M87")
        obs = im.observe_same_nonoise(template, ttype="direct", verbose=False)
    sid = {n: i for i, n in enumerate(table.names)}  # our station indices (ehtim reorders its table)
    d = obs.data
    t1 = np.array([sid[s] for s in d["t1"]])
    t2 = np.array([sid[s] for s in d["t2"]])
    return {"eh": eh, "obs": obs, "sid": sid, "t1": t1, "t2": t2, "d": d}


def test_uv_points_and_sigmas_agree_with_ehtim(eht):
    d, sid = eht["d"], eht["sid"]
    cov = observe_coverage("eht2017", ra_deg=RA_DEG, dec_deg=DEC_DEG, mjd=MJD, **OBS)
    assert len(cov) == len(d)
    mine = {
        (round(t, 6), a, b): (u, v, s) for t, a, b, u, v, s in zip(cov.time, cov.t1, cov.t2, cov.u, cov.v, cov.sigma)
    }
    for row, a, b in zip(d, eht["t1"], eht["t2"]):
        key, sign = ((round(row["time"], 6), a, b), 1.0) if a < b else ((round(row["time"], 6), b, a), -1.0)
        u, v, s = mine[key]  # ehtim may order a baseline the other way round: then (u, v) -> -(u, v)
        scale = np.hypot(row["u"], row["v"])
        assert abs(sign * u - row["u"]) < 1e-9 * scale and abs(sign * v - row["v"]) < 1e-9 * scale
        assert s == pytest.approx(row["sigma"], rel=1e-12)
    del sid


def test_visibilities_agree_with_ehtim_direct(eht):
    d = eht["d"]
    uv = torch.as_tensor(np.stack([d["u"], d["v"]], -1))[None]
    V = Interferometer(uv, NPIX, PSIZE)(torch.as_tensor(_image())[None, None])[0].numpy()
    assert np.abs(V - d["vis"]).max() < 1e-9 * np.abs(d["vis"]).max()


def test_closure_phases_and_log_closure_amplitudes_agree_with_ehtim(eht):
    obs, sid, d = eht["obs"], eht["sid"], eht["d"]
    vis, sigma = torch.as_tensor(d["vis"]), torch.as_tensor(d["sigma"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cp = obs.c_phases(count="min", ang_unit="deg")
        lca = {deb: obs.c_amplitudes(ctype="logcamp", count="min", debias=deb) for deb in (False, True)}
    tris = [(r["time"], sid[r["t1"]], sid[r["t2"]], sid[r["t3"]]) for r in cp]
    idx = closure_index(d["time"], eht["t1"], eht["t2"], triangles=tris)
    dpsi = closure_phases(vis, idx).numpy() - np.deg2rad(cp["cphase"])
    assert np.abs(np.angle(np.exp(1j * dpsi))).max() < 1e-9
    np.testing.assert_allclose(closure_phase_sigmas(vis, sigma, idx).numpy(), np.deg2rad(cp["sigmacp"]), rtol=1e-9)
    # our minimal set is ehtim's: the triangles through the lowest-SEFD station
    mine = closure_index(d["time"], eht["t1"], eht["t2"], sefd=EHT2017_SEFD)
    assert sorted((round(t, 6), *sorted(s)) for t, s in zip(mine.tri_time, mine.tri_stations.tolist())) == sorted(
        (round(t[0], 6), *sorted(t[1:])) for t in tris
    )
    assert mine.n_logcamp == len(lca[False])
    for debias, table in lca.items():
        quads = [
            (r["time"], sid[r["t1"]], sid[r["t2"]], sid[r["t4"]], sid[r["t3"]]) for r in table
        ]  # ehtim: /|V14 V23|
        data = closure_data(d["time"], eht["t1"], eht["t2"], d["vis"], d["sigma"], quadrangles=quads, debias=debias)
        np.testing.assert_allclose(data.logcamp.numpy(), table["camp"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(data.logcamp_sigma.numpy(), table["sigmaca"], rtol=1e-9)


def test_chi_squared_agrees_with_ehtim(eht):
    eh, obs, sid = eht["eh"], eht["obs"], eht["sid"]
    rng = np.random.default_rng(0)
    noisy = obs.copy()
    d = noisy.data
    d["vis"] = d["vis"] + d["sigma"] * (rng.standard_normal(len(d)) + 1j * rng.standard_normal(len(d)))
    other = np.roll(_image(), 1, axis=1) * 1.1
    im2 = eh.image.Image(other, PSIZE, RA_DEG / 15.0, DEC_DEG, rf=230e9, mjd=MJD, source="M87")
    uv = torch.as_tensor(np.stack([d["u"], d["v"]], -1))[None]
    model = Interferometer(uv, NPIX, PSIZE)(torch.as_tensor(other)[None, None])[0]
    vis, sigma = torch.as_tensor(d["vis"]), torch.as_tensor(d["sigma"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = {k: noisy.chisq(im2, dtype=k, ttype="direct") for k in ("vis", "amp", "cphase", "logcamp")}
        lca = noisy.c_amplitudes(ctype="logcamp", count="min", debias=True)
    quads = [(r["time"], sid[r["t1"]], sid[r["t2"]], sid[r["t4"]], sid[r["t3"]]) for r in lca]
    t1, t2 = eht["t1"], eht["t2"]
    mine = {
        "vis": chisq_vis(model, vis, sigma),
        "amp": chisq_amp(model, debias_amplitudes(vis.abs(), sigma), sigma),
        "cphase": closure_data(d["time"], t1, t2, d["vis"], d["sigma"], sefd=EHT2017_SEFD).chisq_cphase(model),
        "logcamp": closure_data(d["time"], t1, t2, d["vis"], d["sigma"], quadrangles=quads).chisq_logcamp(model),
    }
    for k in theirs:
        assert float(mine[k]) == pytest.approx(theirs[k], rel=1e-9), k
