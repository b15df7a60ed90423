"""Scratch memory for the operators' no-gradient fast paths: chunk sizes, and large outputs without page-fault storms.

Why: on a CPU, glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap``,
so a coil-sized temporary of a batched SENSE operator (8 × 8 × 320² complex64 = 52 MiB) was mapped and
page-faulted anew on every call: 4 KiB pages, ~13 000 faults, about as long as the FFTs themselves. The
operators therefore (1) work through a batch in chunks of at most :data:`CHUNK_BYTES`, so that their
temporaries stay small (the allocator then reuses them from its heap), and (2) allocate an output that must
be large with :func:`empty_output`, which hands back the memory of an earlier output of the same size once
nothing refers to it any more (:func:`recycled`), and otherwise asks Linux for transparent huge pages
(``madvise(MADV_HUGEPAGE)``, the same advice PyTorch gives with ``THP_MEM_ALLOC_ENABLE=1``): 2 MiB pages, 512
times fewer faults. Even huge pages are zeroed by the kernel on first touch (52 MiB: ~6 ms against ~2 ms to
write memory already mapped), which a loop of ``A.H(A(x))`` paid on every call. Nothing here changes what an
operator computes, and nothing needs an environment variable.

Recycling is safe by construction: a block is handed out again only when its storage's reference count says
that this module holds the only reference (no tensor, view, NumPy array or DLPack capsule of the caller's
refers to it) and it is not shared memory; the check and the hand-out happen under a lock. At most
:data:`MAX_RECYCLED` blocks of at most :data:`MAX_RECYCLED_BYTES` together are kept (the most recent sizes);
:func:`release_outputs` frees them.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

__all__ = ["CHUNK_BYTES", "chunk_budget", "chunks", "empty_output", "needs_graph", "recycled", "release_outputs"]

#: largest temporary (bytes) of one chunk: a 320² sample with 8 coils (6.5 MiB) goes in two chunks of 4 coils, which
#: ran a SENSE forward + adjoint 5–9 % faster than whole samples (8 MiB) at batch 1 and 8 on one CPU thread (smaller
#: temporaries and less cache traffic; the two were not measured apart); 2–3 MiB measured the same as 4
CHUNK_BYTES = 4 * 2**20
#: outputs at least this large (bytes) get huge-page advice (glibc's largest mmap threshold is 32 MiB)
HUGE_OUTPUT_BYTES = 4 * 2**20
#: large output blocks kept for reuse (one per size, the most recently used sizes), and their total size at most
MAX_RECYCLED = 4
MAX_RECYCLED_BYTES = 512 * 2**20
_HUGE = 2 * 2**20
_MADV_HUGEPAGE = 14
_madvise = None
_lock = threading.Lock()
_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)  # a private function: absent, nothing is recycled
_blocks: OrderedDict[int, torch.UntypedStorage] = OrderedDict()  # size in bytes -> storage held by this module


def needs_graph(*tensors: Tensor | None) -> bool:
    """Whether autograd records an operation on ``tensors``: the fast paths (``out=``, in-place) are then avoided."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def chunk_budget(device: torch.device) -> int:
    """Bytes per chunk on ``device``: :data:`CHUNK_BYTES` on a CPU; unbounded elsewhere (a GPU's caching allocator
    reuses its blocks, and one large kernel beats many small ones)."""
    return CHUNK_BYTES if device.type == "cpu" else sys.maxsize


def chunks(batch: int, parts: int, part_bytes: int, budget: int | None = None) -> Iterator[tuple[slice, slice]]:
    """``(samples, parts)`` slices covering a ``(batch, parts, ...)`` array in chunks of about ``budget`` bytes.

    Whole samples are grouped while a sample (``parts × part_bytes``) fits the budget; a larger sample is
    split over its parts (coils) into near-equal groups. ``budget`` defaults to :data:`CHUNK_BYTES`.

        >>> [(s.start, s.stop, p.start, p.stop) for s, p in chunks(3, 4, 10, budget=80)]
        [(0, 2, 0, 4), (2, 3, 0, 4)]
        >>> [(s.start, s.stop, p.start, p.stop) for s, p in chunks(1, 8, 10, budget=45)]
        [(0, 1, 0, 4), (0, 1, 4, 8)]
    """
    budget = CHUNK_BYTES if budget is None else budget
    sample_bytes = max(1, parts * part_bytes)
    if sample_bytes <= budget:
        step = max(1, budget // sample_bytes)
        for b in range(0, batch, step):
            yield slice(b, min(batch, b + step)), slice(0, parts)
        return
    groups = math.ceil(sample_bytes / budget)
    per = math.ceil(parts / groups)
    for b in range(batch):
        for c in range(0, parts, per):
            yield slice(b, b + 1), slice(c, min(parts, c + per))


def _libc_madvise():
    global _madvise
    if _madvise is None:
        _madvise = False
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                fn = ctypes.CDLL(None, use_errno=True).madvise
                fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                fn.restype = ctypes.c_int
                _madvise = fn
    return _madvise


def empty_output(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``torch.empty(shape)``: for a large CPU tensor, the memory of an earlier output of the same size that nothing
    refers to any more (:func:`recycled`), else fresh memory advised to use huge pages (Linux) before its first touch.

    The contents are undefined, as with ``torch.empty``. The huge-page advice is a hint: where the kernel has
    transparent huge pages off (or this is not Linux) it is a no-op.
    """
    shape = tuple(int(n) for n in shape)
    device = torch.device(device)
    nbytes = math.prod(shape) * dtype.itemsize
    if device.type != "cpu" or nbytes < HUGE_OUTPUT_BYTES:
        return torch.empty(shape, dtype=dtype, device=device)
    with _lock:
        out = _reuse(nbytes, shape, dtype)
        if out is None:
            out = _fresh(shape, dtype)
            _blocks.pop(nbytes, None)
            if nbytes <= MAX_RECYCLED_BYTES and _USE_COUNT is not None:
                _blocks[nbytes] = out.untyped_storage()
            while len(_blocks) > MAX_RECYCLED or sum(_blocks) > MAX_RECYCLED_BYTES:
                _blocks.popitem(last=False)
        return out


def recycled(storage: torch.UntypedStorage) -> bool:
    """Whether ``storage`` may be handed out again: its only reference is the one this module holds (no tensor,
    view, NumPy array or DLPack capsule refers to it), and it is not shared between processes. Never, where this
    torch has no storage reference count to ask (then no block is kept)."""
    if _USE_COUNT is None:
        return False
    return _USE_COUNT(storage._cdata) == 1 and not storage.is_shared()


def release_outputs() -> None:
    """Free the output blocks kept for reuse (tensors the caller still holds are not affected)."""
    with _lock:
        _blocks.clear()


def _reuse(nbytes: int, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor | None:
    storage = _blocks.get(nbytes)
    if storage is None or not recycled(storage) or storage.nbytes() < nbytes:  # (a caller may have resized it)
        return None
    _blocks.move_to_end(nbytes)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def _fresh(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    out = torch.empty(shape, dtype=dtype)
    madvise = _libc_madvise()
    if madvise:
        start = -(-out.data_ptr() // _HUGE) * _HUGE
        stop = (out.data_ptr() + out.numel() * out.element_size()) // _HUGE * _HUGE
        if stop > start:
            madvise(start, stop - start, _MADV_HUGEPAGE)
    return out
