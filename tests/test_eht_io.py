"""UVFITS and FITS-image I/O: conventions on synthetic files written with the real schema, bad input, and the
real EHT 2017 M87 file when it is present (``AMBIENT_EHT_DATA`` or ``../shared/data/eht`` next to the repo)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ambient_science.datasets.fits_image import (
    RAD_PER_UAS,
    SkyImage,
    read_fits_image,
    uas_to_rad,
    write_fits_image,
)
from ambient_science.datasets.uvfits import (
    Observation,
    average,
    read_uvfits,
    scan_labels,
    stokes_i,
    write_uvfits,
)

ROOT = Path(__file__).resolve().parents[1]


def _eht_data_dir() -> Path:
    env = os.environ.get("AMBIENT_EHT_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data" / "eht"


M87 = _eht_data_dir() / "observations" / "M87_2017-04-11_hops_lo.uvfits"


def _obs(n_times: int = 5, stations=("AA", "AP", "SM", "PV"), seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    S = len(stations)
    i1, i2 = np.triu_indices(S, 1)
    times = np.repeat(1.0 + np.arange(n_times) * 10.0 / 3600.0, len(i1))
    t1, t2 = np.tile(i1, n_times), np.tile(i2, n_times)
    K = len(times)
    return Observation(
        time=times,
        t1=t1,
        t2=t2,
        u=rng.uniform(-8e9, 8e9, K),
        v=rng.uniform(-8e9, 8e9, K),
        vis=rng.normal(size=K) + 1j * rng.normal(size=K),
        sigma=rng.uniform(0.01, 0.1, K),
        stations=list(stations),
        freq_hz=227e9,
        ra_deg=187.7,
        dec_deg=12.39,
        mjd=57854,
        source="TEST",
        bandwidth_hz=1.856e9,
        station_xyz=rng.normal(size=(S, 3)) * 6e6,
        sefd=rng.uniform(100, 5000, S),
    )


def _write_raw(
    path: Path,
    *,
    data: np.ndarray,
    baselines: np.ndarray,
    jd: np.ndarray,
    uu_s: np.ndarray,
    vv_s: np.ndarray,
    stokes_crval: float = -1.0,
    freq: float = 230e9,
    chan_width: float = 1e9,
    if_freq: np.ndarray | None = None,
    with_an: bool = True,
    names=("AA", "AP", "SM"),
) -> Path:
    """A random-group file in the AIPS layout: data (G, 1, 1, IF, CHAN, STOKES, 3), UU/VV in seconds."""
    G, _, _, n_if, n_chan, _, _ = data.shape
    day = np.floor(jd - 0.5) + 0.5
    pars = [uu_s, vv_s, np.zeros(G), baselines, day, jd - day]
    gd = fits.GroupData(
        data.astype(np.float32),
        parnames=["UU---SIN", "VV---SIN", "WW---SIN", "BASELINE", "DATE", "DATE"],
        pardata=[np.asarray(p, dtype=np.float32) for p in pars],
        bitpix=-32,
    )
    hdu = fits.GroupsHDU(gd)
    h = hdu.header
    h["OBJECT"] = "SYNTH"
    for i, (ctype, crval, cdelt) in enumerate(
        [
            ("COMPLEX", 1.0, 1.0),
            ("STOKES", stokes_crval, -1.0),
            ("FREQ", freq, chan_width),
            ("IF", 1.0, 1.0),
            ("RA", 10.0, 1.0),
            ("DEC", -20.0, 1.0),
        ],
        start=2,
    ):
        h[f"CTYPE{i}"], h[f"CRVAL{i}"], h[f"CDELT{i}"], h[f"CRPIX{i}"] = ctype, crval, cdelt, 1.0
    hdus = [hdu]
    if with_an:
        S = len(names)
        an = fits.BinTableHDU.from_columns(
            [
                fits.Column(name="ANNAME", format="8A", array=np.array(names)),
                fits.Column(name="STABXYZ", format="3D", array=np.arange(3 * S, dtype=float).reshape(S, 3)),
                fits.Column(name="NOSTA", format="1J", array=np.arange(1, S + 1)),
            ],
            name="AIPS AN",
        )
        hdus.append(an)
    if if_freq is not None:
        fq = fits.BinTableHDU.from_columns(
            [
                fits.Column(name="FRQSEL", format="1J", array=np.array([1])),
                fits.Column(name="IF FREQ", format=f"{n_if}D", array=np.asarray(if_freq)[None]),
                fits.Column(name="TOTAL BANDWIDTH", format=f"{n_if}E", array=np.full((1, n_if), chan_width * n_chan)),
            ],
            name="AIPS FQ",
        )
        hdus.append(fq)
    fits.HDUList(hdus).writeto(path)
    return path


# -- Observation, Stokes I, averaging --------------------------------------------------------------------------


def test_observation_validates_lengths_indices_and_sigma():
    obs = _obs()
    with pytest.raises(ValueError, match="differ in length"):
        Observation(**{**obs.__dict__, "u": obs.u[:-1]})
    with pytest.raises(ValueError, match="station indices"):
        Observation(**{**obs.__dict__, "t2": obs.t2 + 10})
    with pytest.raises(ValueError, match="sigma must be > 0"):
        Observation(**{**obs.__dict__, "sigma": np.zeros(len(obs))})
    with pytest.raises(ValueError, match="autocorrelations"):
        Observation(**{**obs.__dict__, "t2": obs.t1})
    assert obs.uv.shape == (len(obs), 2) and obs.bw_hz == obs.bandwidth_hz
    assert len(obs.baselines) == 6


def test_stokes_i_combines_hands_and_falls_back_to_one():
    rr = np.array([1 + 1j, 2.0, 3.0, 4.0])
    ll = np.array([3 - 1j, 5.0, np.nan, 1.0])
    w_rr = np.array([4.0, 0.0, 1.0, -1.0])  # sigma_RR = 0.5, flagged, 1, flagged
    w_ll = np.array([1.0, 4.0, 1.0, 0.0])  # sigma_LL = 1, 0.5, (nan data), flagged
    vis, sigma, ok = stokes_i(rr, ll, w_rr, w_ll)
    assert ok.tolist() == [True, True, True, False]
    assert vis[0] == pytest.approx(2.0) and sigma[0] == pytest.approx(0.5 * math.sqrt(0.25 + 1.0))
    assert vis[1] == pytest.approx(5.0) and sigma[1] == pytest.approx(0.5)  # RR flagged: LL alone
    assert vis[2] == pytest.approx(3.0) and sigma[2] == pytest.approx(1.0)  # LL not finite: RR alone


def test_average_is_inverse_variance_weighted_per_scan_and_baseline():
    obs = _obs(n_times=6)
    late = average(obs.select(np.ones(len(obs), bool)), gap_minutes=2.0)
    assert len(late) == 6  # one scan, six baselines
    sel = (obs.t1 == 0) & (obs.t2 == 1)
    w = obs.sigma[sel] ** -2
    row = (late.t1 == 0) & (late.t2 == 1)
    assert late.vis[row][0] == pytest.approx((w * obs.vis[sel]).sum() / w.sum())
    assert late.sigma[row][0] == pytest.approx(w.sum() ** -0.5)
    assert late.time[row][0] == pytest.approx(obs.time[sel].mean())
    binned = average(obs, seconds=20.0)  # bins of 2 integrations of 10 s
    assert len(binned) == 3 * 6
    with pytest.raises(ValueError, match="seconds"):
        average(obs, seconds=0.0)


def test_scan_labels_split_at_gaps():
    t = np.array([0.0, 0.01, 0.02, 0.2, 0.21, 1.0])
    assert scan_labels(t, gap_minutes=2.0).tolist() == [0, 0, 0, 1, 1, 2]


# -- uvfits reader on synthetic files --------------------------------------------------------------------------


def test_reader_conventions_on_a_multi_if_file(tmp_path):
    """UU/VV seconds -> wavelengths at the mean frequency, DATE pair -> hours, a1 > a2 flipped, IFs and
    channels inverse-variance averaged, one flagged hand, fully flagged records dropped."""
    G = 4
    data = np.zeros((G, 1, 1, 2, 2, 4, 3))
    data[..., 0, 0] = 1.0  # RR real = 1
    data[..., 1, 0] = 3.0  # LL real = 3
    data[..., 0, 1] = 0.5  # RR imag
    data[..., :2, 2] = 4.0  # weights: sigma = 0.5 per (IF, channel, hand)
    data[1, ..., 1, 2] = 0.0  # record 1: LL flagged
    data[2, ..., :, 2] = 0.0  # record 2: everything flagged
    data[3, :, :, 0, 0, 0, 0] = 5.0  # record 3: one (IF, channel) of RR differs
    freq, width = 230e9, 0.5e9
    if_freq = np.array([0.0, 1e9])
    mean_freq = freq + 0.25e9 + 0.5e9  # channels at +0, +0.5 GHz; IFs at +0, +1 GHz
    jd0 = 2457854.5
    jd = jd0 + np.array([1.0, 1.5, 2.0, 25.0]) / 24.0
    uu = np.array([1e-2, -2e-2, 3e-2, 4e-2])
    baselines = np.array([256 + 2, 3 * 256 + 1, 256 + 3, 2 * 256 + 3], dtype=float)  # second one is 3-1
    path = _write_raw(
        tmp_path / "multi.uvfits", data=data, baselines=baselines, jd=jd, uu_s=uu, vv_s=2 * uu,
        freq=freq, chan_width=width, if_freq=if_freq,
    )  # fmt: skip
    obs = read_uvfits(path)
    assert len(obs) == 3 and obs.stations == ["AA", "AP", "SM"]
    assert obs.freq_hz == pytest.approx(mean_freq)
    assert obs.mjd == 57854 and obs.time == pytest.approx([1.0, 1.5, 25.0], abs=1e-5)
    assert obs.t1.tolist() == [0, 0, 1] and obs.t2.tolist() == [1, 2, 2]
    # flipped record: u, v negated and the visibility conjugated
    assert obs.u[1] == pytest.approx(2e-2 * mean_freq, rel=1e-6) and obs.v[1] == pytest.approx(
        4e-2 * mean_freq, rel=1e-6
    )
    assert obs.u[0] == pytest.approx(1e-2 * mean_freq, rel=1e-6)
    # record 0: 4 (IF, chan) with sigma 0.5 -> per-hand sigma 0.25; I = (RR + LL) / 2
    assert obs.vis[0] == pytest.approx(2.0 + 0.25j)
    assert obs.sigma[0] == pytest.approx(0.5 * math.sqrt(2 * 0.25**2))
    # record 1: LL flagged -> RR alone, conjugated by the flip
    assert obs.vis[1] == pytest.approx(1.0 - 0.5j) and obs.sigma[1] == pytest.approx(0.25)
    # record 3: RR = mean(5, 1, 1, 1) = 2
    assert obs.vis[2].real == pytest.approx((2.0 + 3.0) / 2)
    assert obs.station_xyz.shape == (3, 3) and obs.sefd is None and obs.source == "SYNTH"
    assert obs.ra_deg == 10.0 and obs.dec_deg == -20.0


def test_reader_takes_stored_stokes_i(tmp_path):
    data = np.zeros((2, 1, 1, 1, 1, 1, 3))
    data[..., 0] = 2.0
    data[..., 2] = 100.0
    path = _write_raw(
        tmp_path / "i.uvfits", data=data, baselines=np.array([258.0, 259.0]), jd=np.full(2, 2457854.6),
        uu_s=np.array([1e-2, 2e-2]), vv_s=np.zeros(2), stokes_crval=1.0,
    )  # fmt: skip
    obs = read_uvfits(path)
    assert obs.vis == pytest.approx([2.0, 2.0]) and obs.sigma == pytest.approx([0.1, 0.1])


def test_reader_rejects_bad_files(tmp_path):
    data = np.zeros((2, 1, 1, 1, 1, 4, 3))
    data[..., 2] = 1.0
    common = dict(data=data, baselines=np.array([258.0, 259.0]), jd=np.full(2, 2457854.6), uu_s=np.ones(2) * 1e-2)
    no_an = _write_raw(tmp_path / "no_an.uvfits", vv_s=np.zeros(2), with_an=False, **common)
    with pytest.raises(ValueError, match=r"no_an\.uvfits.*AIPS AN"):
        read_uvfits(no_an)
    cross = _write_raw(tmp_path / "cross.uvfits", vv_s=np.zeros(2), stokes_crval=-3.0, **common)  # RL LR XX YY
    data_x = data[..., :2, :]
    cross_only = _write_raw(
        tmp_path / "cross_only.uvfits", vv_s=np.zeros(2), stokes_crval=-3.0, **{**common, "data": data_x}
    )  # RL, LR only
    with pytest.raises(ValueError, match=r"cross_only\.uvfits: cannot form Stokes I"):
        read_uvfits(cross_only)
    assert len(read_uvfits(cross)) == 2  # RL, LR, XX, YY: I from XX and YY
    unknown = _write_raw(tmp_path / "ant.uvfits", vv_s=np.zeros(2), **{**common, "baselines": np.array([258.0, 265.0])})
    with pytest.raises(ValueError, match="not in the AIPS AN table"):
        read_uvfits(unknown)
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(tmp_path / "image.fits")
    with pytest.raises(ValueError, match="not a random-group"):
        read_uvfits(tmp_path / "image.fits")
    with pytest.raises(FileNotFoundError, match="missing"):
        read_uvfits(tmp_path / "missing.uvfits")


def test_write_read_round_trip(tmp_path):
    obs = _obs()
    path = write_uvfits(obs, tmp_path / "rt.uvfits")
    back = read_uvfits(path)
    assert back.stations == obs.stations and back.mjd == obs.mjd and back.source == obs.source
    assert back.freq_hz == obs.freq_hz and back.bandwidth_hz == pytest.approx(obs.bandwidth_hz)
    np.testing.assert_array_equal(back.t1, obs.t1)
    np.testing.assert_array_equal(back.t2, obs.t2)
    np.testing.assert_allclose(back.time, obs.time, atol=1e-6)  # float32 day fraction: < 4 ms
    np.testing.assert_allclose(back.u, obs.u, rtol=1e-6)
    np.testing.assert_allclose(back.vis, obs.vis, atol=1e-6)
    np.testing.assert_allclose(back.sigma, obs.sigma, rtol=1e-6)
    np.testing.assert_allclose(back.sefd, obs.sefd)
    np.testing.assert_allclose(back.station_xyz, obs.station_xyz)
    with pytest.raises(FileExistsError):
        write_uvfits(obs, path)


@pytest.mark.skipif(not M87.is_file(), reason=f"EHT reference data not found at {M87}")
def test_real_m87_2017_file_loads():
    obs = read_uvfits(M87)
    assert len(obs) == 5877
    assert obs.stations == ["AA", "AP", "AZ", "LM", "PV", "SM"]
    assert len(obs.baselines) == 15
    assert obs.source == "M87" and obs.mjd == 57854
    assert obs.freq_hz == pytest.approx(227.0707e9, rel=1e-6)
    assert obs.ra_deg == pytest.approx(187.7059, abs=1e-3) and obs.dec_deg == pytest.approx(12.3911, abs=1e-3)
    assert 0.5 < obs.time.min() < obs.time.max() < 7.5
    assert 8e9 < obs.uvdist.max() < 8.5e9  # ~8.3 Glambda: the EHT's resolution of ~25 µas
    assert np.all(obs.sigma > 0) and np.abs(obs.vis).max() < 2.0  # M87 compact flux ~0.6 Jy
    assert len(np.unique(scan_labels(obs.time))) == 22  # the file's AIPS NX table lists 22 scans
    assert len(average(obs)) < len(obs)


# -- FITS images ------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")
def test_fits_image_orientation_and_header(tmp_path):
    """Library pixel (0, 0) is the north-east corner: in the FITS file it is the top-left of the sky,
    RA > CRVAL1 and Dec > CRVAL2 by the WCS."""
    from astropy.wcs import WCS

    img = np.zeros((8, 8), np.float32)
    img[0, 0] = 1.0  # north-east
    img[7, 1] = 0.5  # south, one column in from the east edge
    sky = SkyImage(img, psize=uas_to_rad(5.0), ra_deg=187.7, dec_deg=12.39, source="M87", mjd=57854)
    path = write_fits_image(tmp_path / "im.fits", sky)
    with fits.open(path) as hdul:
        h, data = hdul[0].header, hdul[0].data
    assert h["CDELT1"] < 0 < h["CDELT2"] and h["CDELT2"] * 3600e6 == pytest.approx(5.0)
    assert h["BUNIT"] == "JY/PIXEL" and h["CRPIX1"] == 4.5
    row, col = np.unravel_index(np.argmax(data), data.shape)
    ra, dec = WCS(h).wcs_pix2world([[col, row]], 0)[0]
    assert ra > 187.7 and dec > 12.39  # east and north of the centre
    ra2, dec2 = WCS(h).wcs_pix2world([[1, 7 - 7]], 0)[0]  # library (7, 1) is FITS row 0, column 1
    assert data[0, 1] == 0.5 and ra2 > 187.7 and dec2 < 12.39
    back = read_fits_image(path)
    np.testing.assert_array_equal(back.image, img)
    assert back.psize_uas == pytest.approx(5.0) and back.fov_uas == pytest.approx(40.0)
    assert (back.ra_deg, back.dec_deg, back.source, back.mjd) == (187.7, 12.39, "M87", 57854)


def test_fits_image_reader_maps_other_conventions(tmp_path):
    img = np.arange(16, dtype=np.float32).reshape(4, 4)
    ps_deg = math.degrees(uas_to_rad(2.0))
    # RA increasing to the right, Dec rows from the north, extra FREQ/STOKES axes, Jy/beam
    hdu = fits.PrimaryHDU(img[None, None, :, ::-1].copy())
    h = hdu.header
    h.update(CTYPE1="RA---SIN", CDELT1=ps_deg, CTYPE2="DEC--SIN", CDELT2=-ps_deg, CTYPE3="FREQ", CTYPE4="STOKES")
    h.update(CRVAL4=1.0, CDELT4=1.0, CRPIX4=1.0, BUNIT="JY/BEAM", BMAJ=4 * ps_deg, BMIN=2 * ps_deg)
    hdu.writeto(tmp_path / "other.fits")
    back = read_fits_image(tmp_path / "other.fits")
    beam_px = math.pi * 4 * 2 / (4 * math.log(2))
    np.testing.assert_allclose(back.image, img / beam_px, rtol=1e-6)
    assert back.psize / RAD_PER_UAS == pytest.approx(2.0)


def test_fits_image_reader_rejects_bad_input(tmp_path):
    fits.PrimaryHDU(np.zeros((4, 6), np.float32)).writeto(tmp_path / "rect.fits")
    with pytest.raises(ValueError, match="CDELT"):
        read_fits_image(tmp_path / "rect.fits")
    hdu = fits.PrimaryHDU(np.zeros((4, 6), np.float32))
    hdu.header.update(CDELT1=-1e-9, CDELT2=1e-9)
    hdu.writeto(tmp_path / "rect2.fits")
    with pytest.raises(ValueError, match=r"rect2\.fits.*square"):
        read_fits_image(tmp_path / "rect2.fits")
    hdu = fits.PrimaryHDU(np.zeros((4, 4), np.float32))
    hdu.header.update(CDELT1=-1e-9, CDELT2=1e-9, BUNIT="K")
    hdu.writeto(tmp_path / "kelvin.fits")
    with pytest.raises(ValueError, match="BUNIT"):
        read_fits_image(tmp_path / "kelvin.fits")
    with pytest.raises(ValueError, match="square"):
        SkyImage(np.zeros((3, 4)), psize=1e-10)
