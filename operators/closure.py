"""Closure phases, log closure amplitudes and the χ² terms of interferometric imaging, differentiable in torch.

For stations ``a, b, c, d`` at one time (``V_ba = conj(V_ab)``):

    closure phase             ψ_abc = arg(V_ab V_bc V_ca)
    log closure amplitude     L_abcd = log|V_ab| + log|V_cd| - log|V_ac| - log|V_bd|

Both are invariant to station gains ``V_ab -> g_a conj(g_b) V_ab``. Their sigmas, to first order in the
visibility sigmas ``σ_i`` (per real/imaginary part): ``σ_ψ = sqrt(Σ_i (σ_i/|V_i|)²)`` [rad] and
``σ_L = sqrt(Σ_i (σ_i/|V_i|)²)``.

Minimal sets: per time, only a non-redundant set is kept. With ``N`` stations and all baselines that is
``(N-1)(N-2)/2`` closure phases and ``N(N-3)/2`` log closure amplitudes. Candidates are taken in the
order of a station priority (reference first, by default the lowest-SEFD station as ehtim does) and a
candidate is kept when it is linearly independent of those already kept (its baseline vector is not
in their span), so missing baselines are handled too: with all baselines present the closure phases
are exactly the triangles through the reference station. Times with fewer than 3 (4) stations have no
closure phase (amplitude).

χ² normalisations are ehtim's (Chael et al. 2018), each over ``n`` data:

    χ²_vis = Σ |V - V̂|²/σ² / (2n)        χ²_amp = Σ (|V| - |V̂|)²/σ² / n
    χ²_cp  = (2/n) Σ (1 - cos(ψ - ψ̂))/σ_ψ²   χ²_lca = Σ (L - L̂)²/σ_L² / n

Debiasing (ehtim's default, on by default in :func:`closure_data`): amplitudes
``A_d = sqrt(max(|V|² - σ², 0))`` and ``L_d = Σ ±log A_d + ½ Σ ±(σ/A_d)²`` with ``σ_L`` from ``A_d``.
A quadrangle labelled ``(a, b, c, d)`` here is ehtim's ``(t1, t2, t3, t4) = (a, b, d, c)`` (ehtim divides
by ``|V_14||V_23|``).

Build the index once from ``(time, t1, t2)`` with numpy (:func:`closure_index`), then evaluate on
batched model visibilities ``(..., K)`` in torch (every batch entry shares the index).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ClosureData",
    "ClosureIndex",
    "chisq_amp",
    "chisq_cphase",
    "chisq_logcamp",
    "chisq_vis",
    "closure_data",
    "closure_index",
    "closure_phase_sigmas",
    "closure_phases",
    "debias_amplitudes",
    "log_closure_amplitude_sigmas",
    "log_closure_amplitudes",
]


@dataclass(frozen=True)
class ClosureIndex:
    """Which visibilities form each closure quantity of a (minimal) set.

    Attributes:
        tri_vis: ``(T, 3)`` indices of ``V_ab, V_bc, V_ca`` in the visibility list.
        tri_conj: ``(T, 3)`` bool, True where the stored visibility is the reversed baseline (use its conjugate).
        tri_stations: ``(T, 3)`` station indices ``(a, b, c)``; tri_time: ``(T,)``.
        quad_vis: ``(Q, 4)`` indices of ``V_ab, V_cd`` (numerator) and ``V_ac, V_bd`` (denominator).
        quad_stations: ``(Q, 4)`` station indices ``(a, b, c, d)``; quad_time: ``(Q,)``.
        n_vis: length ``K`` of the visibility list.
    """

    tri_vis: np.ndarray
    tri_conj: np.ndarray
    tri_stations: np.ndarray
    tri_time: np.ndarray
    quad_vis: np.ndarray
    quad_stations: np.ndarray
    quad_time: np.ndarray
    n_vis: int

    @property
    def n_cphase(self) -> int:
        return int(self.tri_vis.shape[0])

    @property
    def n_logcamp(self) -> int:
        return int(self.quad_vis.shape[0])


# -- building the index ---------------------------------------------------------------------------------
def _triangle_vector(tri, edge_pos, n_edges):
    vec = np.zeros(n_edges)
    a, b, c = tri
    for x, y in ((a, b), (b, c), (c, a)):
        vec[edge_pos[(min(x, y), max(x, y))]] += 1.0 if x < y else -1.0
    return vec


def _quad_vector(quad, edge_pos, n_edges):
    vec = np.zeros(n_edges)
    a, b, c, d = quad
    for (x, y), s in (((a, b), 1.0), ((c, d), 1.0), ((a, c), -1.0), ((b, d), -1.0)):
        vec[edge_pos[(min(x, y), max(x, y))]] += s
    return vec


def _greedy_independent(candidates, vector_of, max_rank: int) -> list:
    """Candidates in order, each kept when its vector is independent of the kept ones (Gram–Schmidt)."""
    kept, basis = [], []
    if max_rank <= 0:
        return kept
    for cand in candidates:
        vec = vector_of(cand)
        if vec is None:
            continue
        r = vec.copy()
        for q in basis:  # modified Gram–Schmidt, twice for stability
            r -= (q @ r) * q
        for q in basis:
            r -= (q @ r) * q
        norm = np.linalg.norm(r)
        if norm > 1e-8 * max(1.0, np.linalg.norm(vec)):
            basis.append(r / norm)
            kept.append(cand)
            if len(kept) == max_rank:
                break
    return kept


def _minimal_sets(edges: tuple[tuple[int, int], ...], order: list[int]) -> tuple[list, list]:
    """Minimal triangles and quadrangles (as station tuples) of one baseline graph."""
    edge_pos = {e: i for i, e in enumerate(edges)}
    n_e, n_v = len(edges), len(order)
    # cycle rank E - V + C and closure-amplitude rank E - rank(|incidence|)
    parent = {s: s for s in order}

    def find(s):
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    for a, b in edges:
        parent[find(a)] = find(b)
    n_comp = len({find(s) for s in order})
    incidence = np.zeros((n_v, n_e))
    pos = {s: i for i, s in enumerate(order)}
    for j, (a, b) in enumerate(edges):
        incidence[pos[a], j] = incidence[pos[b], j] = 1.0
    cp_rank = n_e - n_v + n_comp
    lca_rank = n_e - (np.linalg.matrix_rank(incidence) if n_e else 0)

    def tri_vec(tri):
        a, b, c = tri
        if all((min(x, y), max(x, y)) in edge_pos for x, y in ((a, b), (b, c), (a, c))):
            return _triangle_vector(tri, edge_pos, n_e)
        return None

    def quad_vec(quad):
        a, b, c, d = quad
        if all((min(x, y), max(x, y)) in edge_pos for x, y in ((a, b), (c, d), (a, c), (b, d))):
            return _quad_vector(quad, edge_pos, n_e)
        return None

    tris = _greedy_independent(itertools.combinations(order, 3), tri_vec, cp_rank)

    def quad_candidates():
        for a, b, c, d in itertools.combinations(order, 4):
            yield (a, b, c, d)  # |ab||cd| / (|ac||bd|)
            yield (a, b, d, c)  # |ab||cd| / (|ad||bc|)
            yield (a, c, d, b)  # |ac||bd| / (|ad||bc|)

    quads = _greedy_independent(quad_candidates(), quad_vec, lca_rank)
    return tris, quads


def _lookup(table: dict, a: int, b: int) -> tuple[int, bool]:
    if (a, b) in table:
        return table[(a, b)], False
    if (b, a) in table:
        return table[(b, a)], True
    raise KeyError((a, b))


def closure_index(
    time: np.ndarray,
    t1: np.ndarray,
    t2: np.ndarray,
    *,
    observed: np.ndarray | None = None,
    priority: Sequence[int] | None = None,
    sefd: np.ndarray | None = None,
    triangles: Sequence[tuple[float, int, int, int]] | None = None,
    quadrangles: Sequence[tuple[float, int, int, int, int]] | None = None,
) -> ClosureIndex:
    """Index sets of minimal closure phases and log closure amplitudes of a visibility list.

    Args:
        time, t1, t2: ``(K,)`` time (visibilities at exactly equal times form one group) and station
            indices per visibility.
        observed: ``(K,)`` 0/1 or bool; entries with 0 (padding, flagged) are ignored.
        priority: station indices in order of preference, the reference station first; stations not
            listed come after, by index. Default: ascending ``sefd`` when given (ehtim's choice of the
            reference), else ascending station index.
        triangles, quadrangles: instead of the minimal sets, these explicit ``(time, a, b, c)`` /
            ``(time, a, b, c, d)`` (e.g. to evaluate another tool's set); every baseline must exist.

    The first visibility of a baseline at a time is used when the list repeats one. Times with fewer
    than 3 (4) stations contribute no closure phase (amplitude); the result may be empty.
    """
    time = np.asarray(time, dtype=np.float64)
    t1 = np.asarray(t1, dtype=np.int64)
    t2 = np.asarray(t2, dtype=np.int64)
    K = time.shape[0]
    if t1.shape != (K,) or t2.shape != (K,):
        raise ValueError(f"time, t1, t2 must all be (K,), got {time.shape}, {t1.shape}, {t2.shape}")
    valid = np.ones(K, bool) if observed is None else np.asarray(observed).astype(bool).reshape(K)
    valid &= t1 != t2
    if priority is None:
        n_st = int(max(t1.max(initial=-1), t2.max(initial=-1))) + 1
        priority = list(np.argsort(np.asarray(sefd), kind="stable")) if sefd is not None else list(range(n_st))
    rank = {int(s): i for i, s in enumerate(priority)}

    def by_priority(s):
        return (rank.get(s, len(rank)), s)

    groups: dict[float, dict[tuple[int, int], int]] = {}
    for k in np.nonzero(valid)[0]:
        g = groups.setdefault(float(time[k]), {})
        a, b = int(t1[k]), int(t2[k])
        if (a, b) not in g and (b, a) not in g:
            g[(a, b)] = int(k)

    tri_rows, quad_rows = [], []
    if triangles is None or quadrangles is None:
        cache: dict = {}
        for tm, g in groups.items():
            edges = tuple(sorted((min(a, b), max(a, b)) for a, b in g))
            order = sorted({s for e in edges for s in e}, key=by_priority)
            key = (edges, tuple(order))
            if key not in cache:
                cache[key] = _minimal_sets(edges, order)
            tris, quads = cache[key]
            if triangles is None:
                tri_rows += [(tm, *t) for t in tris]
            if quadrangles is None:
                quad_rows += [(tm, *q) for q in quads]
    if triangles is not None:
        tri_rows = [tuple(r) for r in triangles]
    if quadrangles is not None:
        quad_rows = [tuple(r) for r in quadrangles]

    def rows_to_index(rows, pairs_of, width, what):
        vis = np.zeros((len(rows), width), np.int64)
        conj = np.zeros((len(rows), width), bool)
        for i, (tm, *st) in enumerate(rows):
            g = groups.get(float(tm), {})
            for j, (a, b) in enumerate(pairs_of(*st)):
                try:
                    vis[i, j], conj[i, j] = _lookup(g, int(a), int(b))
                except KeyError:
                    raise ValueError(f"{what} {tuple(st)} at time {tm}: baseline {(a, b)} is not in the data") from None
        st = np.array([r[1:] for r in rows], np.int64).reshape(len(rows), width)
        return vis, conj, st, np.array([r[0] for r in rows], np.float64)

    tv, tc, ts, tt = rows_to_index(tri_rows, lambda a, b, c: ((a, b), (b, c), (c, a)), 3, "triangle")
    qv, _, qs, qt = rows_to_index(quad_rows, lambda a, b, c, d: ((a, b), (c, d), (a, c), (b, d)), 4, "quadrangle")
    return ClosureIndex(tv, tc, ts, tt, qv, qs, qt, K)


# -- evaluating closure quantities ------------------------------------------------------------------------
def _as_tensor(x, like: Tensor | None = None) -> Tensor:
    t = torch.as_tensor(x)
    return t.to(like.device) if like is not None else t


def _idx(a: np.ndarray, device) -> Tensor:
    return torch.as_tensor(a, dtype=torch.long, device=device)


def closure_phases(vis: Tensor, index: ClosureIndex) -> Tensor:
    """``ψ = arg(V_ab V_bc V_ca)`` [rad] in ``(-π, π]``.

    Shape: ``vis (..., K)`` complex -> ``(..., T)``.
    """
    vis = _as_tensor(vis)
    v = vis[..., _idx(index.tri_vis, vis.device)]  # (..., T, 3)
    v = torch.where(torch.as_tensor(index.tri_conj, device=vis.device), v.conj(), v)
    return torch.angle(v[..., 0] * v[..., 1] * v[..., 2])


def log_closure_amplitudes(vis: Tensor, index: ClosureIndex) -> Tensor:
    """``L = log|V_ab| + log|V_cd| - log|V_ac| - log|V_bd|``.

    Shape: ``vis (..., K)`` complex -> ``(..., Q)``.
    """
    vis = _as_tensor(vis)
    la = torch.log(vis.abs()[..., _idx(index.quad_vis, vis.device)])  # (..., Q, 4)
    return la[..., 0] + la[..., 1] - la[..., 2] - la[..., 3]


def _inverse_snr2(vis: Tensor, sigma: Tensor, idx: np.ndarray) -> Tensor:
    vis = _as_tensor(vis)
    sigma = _as_tensor(sigma, vis)
    i = _idx(idx, vis.device)
    return (sigma[..., i] / vis.abs()[..., i]) ** 2


def closure_phase_sigmas(vis: Tensor, sigma: Tensor, index: ClosureIndex) -> Tensor:
    """``σ_ψ = sqrt(Σ_i (σ_i/|V_i|)²)`` over the three baselines [rad]. Shape: ``(..., K)`` -> ``(..., T)``."""
    return _inverse_snr2(vis, sigma, index.tri_vis).sum(-1).sqrt()


def log_closure_amplitude_sigmas(vis: Tensor, sigma: Tensor, index: ClosureIndex) -> Tensor:
    """``σ_L = sqrt(Σ_i (σ_i/|V_i|)²)`` over the four baselines. Shape: ``(..., K)`` -> ``(..., Q)``."""
    return _inverse_snr2(vis, sigma, index.quad_vis).sum(-1).sqrt()


def debias_amplitudes(amp: Tensor, sigma: Tensor, *, force_nonzero: bool = False) -> Tensor:
    """Amplitudes corrected for the noise bias, ``sqrt(max(A² - σ², 0))`` (ehtim's).

    ``force_nonzero``: amplitudes with ``A <= σ`` become ``σ`` instead of 0 (as for closure amplitudes).
    Shape: elementwise.
    """
    amp = _as_tensor(amp)
    sigma = _as_tensor(sigma, amp)
    deb = torch.sqrt(torch.clamp(amp**2 - sigma**2, min=0.0))
    return torch.where(amp <= sigma, sigma.to(deb.dtype), deb) if force_nonzero else deb


# -- χ² -------------------------------------------------------------------------------------------------
def _count(n: int, what: str) -> int:
    if n == 0:
        raise ValueError(
            f"no {what}: the data have no time with enough stations "
            f"({'3 for a closure phase' if 'phase' in what else '4 for a closure amplitude'})"
        )
    return n


def _masked_count(mask: Tensor | None, n: int, like: Tensor) -> Tensor | int:
    if mask is None:
        return _count(n, "visibilities")
    return mask.to(like.dtype).sum(-1).clamp_min(1.0)


def chisq_vis(model: Tensor, vis: Tensor, sigma: Tensor, observed: Tensor | None = None) -> Tensor:
    """``χ²_vis = Σ |V - V̂|²/σ² / (2n)`` over observed entries. Shape: ``(..., K)`` -> ``(...)``."""
    vis, sigma = _as_tensor(vis, model), _as_tensor(sigma, model)
    r = ((vis - model).abs() / sigma) ** 2
    if observed is not None:
        r = r * observed
    return r.sum(-1) / (2 * _masked_count(observed, r.shape[-1], r))


def chisq_amp(model: Tensor, amp: Tensor, sigma: Tensor, observed: Tensor | None = None) -> Tensor:
    """``χ²_amp = Σ (|V| - |V̂|)²/σ² / n`` (``amp``: measured, possibly debiased, amplitudes). Shape: -> ``(...)``."""
    amp, sigma = _as_tensor(amp, model), _as_tensor(sigma, model)
    r = ((amp - model.abs()) / sigma) ** 2
    if observed is not None:
        r = r * observed
    return r.sum(-1) / _masked_count(observed, r.shape[-1], r)


def chisq_cphase(model: Tensor, cphase: Tensor, sigma: Tensor, index: ClosureIndex) -> Tensor:
    """``χ²_cp = (2/n) Σ (1 - cos(ψ - ψ̂))/σ_ψ²`` (radians). Shape: ``model (..., K)``, data ``(T,)`` -> ``(...)``."""
    n = _count(index.n_cphase, "closure phases")
    psi = closure_phases(model, index)
    cphase, sigma = _as_tensor(cphase, psi).to(psi.dtype), _as_tensor(sigma, psi).to(psi.dtype)
    return (2.0 / n) * ((1 - torch.cos(cphase - psi)) / sigma**2).sum(-1)


def chisq_logcamp(model: Tensor, logcamp: Tensor, sigma: Tensor, index: ClosureIndex) -> Tensor:
    """``χ²_lca = Σ (L - L̂)²/σ_L² / n``. Shape: ``model (..., K)``, data ``(Q,)`` -> ``(...)``."""
    n = _count(index.n_logcamp, "log closure amplitudes")
    L = log_closure_amplitudes(model, index)
    logcamp, sigma = _as_tensor(logcamp, L).to(L.dtype), _as_tensor(sigma, L).to(L.dtype)
    return (((logcamp - L) / sigma) ** 2).sum(-1) / n


# -- closure data of an observation -------------------------------------------------------------------------
@dataclass
class ClosureData:
    """Measured closure quantities of one observation with their sigmas, and the χ² of a model against them.

    Attributes: ``index`` (:class:`ClosureIndex`), ``cphase`` / ``cphase_sigma`` ``(T,)`` [rad],
    ``logcamp`` / ``logcamp_sigma`` ``(Q,)``, float64 tensors.
    """

    index: ClosureIndex
    cphase: Tensor
    cphase_sigma: Tensor
    logcamp: Tensor
    logcamp_sigma: Tensor

    def chisq_cphase(self, model_vis: Tensor) -> Tensor:
        """χ²_cp of model visibilities ``(..., K)`` -> ``(...)``."""
        return chisq_cphase(model_vis, self.cphase, self.cphase_sigma, self.index)

    def chisq_logcamp(self, model_vis: Tensor) -> Tensor:
        """χ²_lca of model visibilities ``(..., K)`` -> ``(...)``."""
        return chisq_logcamp(model_vis, self.logcamp, self.logcamp_sigma, self.index)

    @classmethod
    def from_observation(cls, obs: Any, **kwargs) -> ClosureData:
        """From anything with fields ``time, t1, t2, vis, sigma`` (and optionally ``sefd``)."""
        if getattr(obs, "vis", None) is None:
            raise ValueError("closure data need visibilities: the observation has no 'vis'")
        if "sefd" not in kwargs and "priority" not in kwargs and getattr(obs, "sefd", None) is not None:
            kwargs["sefd"] = obs.sefd
        return closure_data(obs.time, obs.t1, obs.t2, obs.vis, obs.sigma, **kwargs)


def closure_data(
    time: np.ndarray,
    t1: np.ndarray,
    t2: np.ndarray,
    vis: np.ndarray,
    sigma: np.ndarray,
    *,
    debias: bool = True,
    **index_kwargs,
) -> ClosureData:
    """Minimal closure phases and log closure amplitudes of measured visibilities, with propagated sigmas.

    ``debias``: debias the log closure amplitudes and their sigmas as ehtim does (module docstring),
    amplitudes with ``|V| <= σ`` counting as ``σ``. ``index_kwargs`` go to :func:`closure_index`
    (``observed``, ``priority``, ``sefd``, ``triangles``, ``quadrangles``). Raises ``ValueError`` when
    no time has 3 stations (no closure phase at all).
    """
    index = closure_index(time, t1, t2, **index_kwargs)
    _count(index.n_cphase, "closure phases")
    v = torch.as_tensor(np.asarray(vis, dtype=np.complex128))
    s = torch.as_tensor(np.asarray(sigma, dtype=np.float64))
    if v.shape != s.shape or v.shape != (index.n_vis,):
        raise ValueError(f"vis and sigma must be ({index.n_vis},), got {tuple(v.shape)} and {tuple(s.shape)}")
    if debias:
        amp = debias_amplitudes(v.abs(), s, force_nonzero=True)
        sign = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
        inv_snr2 = _inverse_snr2(amp, s, index.quad_vis)
        logcamp = log_closure_amplitudes(amp, index) + 0.5 * (sign * inv_snr2).sum(-1)
        logcamp_sigma = inv_snr2.sum(-1).sqrt()
    else:
        logcamp = log_closure_amplitudes(v, index)
        logcamp_sigma = log_closure_amplitude_sigmas(v, s, index)
    return ClosureData(
        index=index,
        cphase=closure_phases(v, index),
        cphase_sigma=closure_phase_sigmas(v, s, index),
        logcamp=logcamp,
        logcamp_sigma=logcamp_sigma,
    )
