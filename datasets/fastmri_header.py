"""The ISMRMRD XML header of fastMRI files: the fields the reader needs (matrix sizes, fields of view, the
acquired phase-encode columns) and a minimal writer of the same fields (:func:`make_ismrmrd_header`).

    >>> h = parse_ismrmrd_header(make_ismrmrd_header((640, 372, 1), (320, 320, 1)))
    >>> h.encoding_size, h.recon_size, h.padding
    ((640, 372, 1), (320, 320, 1), (0, 372))
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FastMRIHeader", "make_ismrmrd_header", "parse_ismrmrd_header"]

_NS = "http://www.ismrm.org/ISMRMRD"


@dataclass(frozen=True)
class FastMRIHeader:
    """What the reader needs from the ISMRMRD header.

    ``encoding_size`` and ``recon_size`` are ``(x, y, z)`` = (readout rows, phase-encode columns, slices
    per encoding); fields of view in mm. Phase-encode columns outside ``padding`` were not acquired.
    """

    encoding_size: tuple[int, int, int]
    recon_size: tuple[int, int, int]
    encoding_fov_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    recon_fov_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    kspace_center: int | None = None  # encodingLimits/kspace_encoding_step_1/center
    kspace_maximum: int | None = None  # encodingLimits/kspace_encoding_step_1/maximum

    @property
    def padding(self) -> tuple[int, int]:
        """Acquired phase-encode columns ``[left, right)`` on the encoded grid (fastMRI's rule:
        ``left = enc_y // 2 - center``, ``right = left + maximum + 1``)."""
        enc_y = self.encoding_size[1]
        if self.kspace_center is None or self.kspace_maximum is None:
            return 0, enc_y
        left = enc_y // 2 - self.kspace_center
        return left, left + self.kspace_maximum + 1


def _text(root: ET.Element, path: Sequence[str], source: str) -> str:
    node = root
    for tag in path:
        nxt = node.find(f"{{{_NS}}}{tag}")
        if nxt is None:
            nxt = node.find(tag)  # tolerate headers written without the namespace
        if nxt is None:
            raise ValueError(f"{source}: ISMRMRD header lacks {'/'.join(path)}")
        node = nxt
    return (node.text or "").strip()


def parse_ismrmrd_header(xml: bytes | str, *, source: str = "ismrmrd_header") -> FastMRIHeader:
    """Parse the encoding and recon matrix sizes, fields of view and phase-encode limits."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise ValueError(f"{source}: ismrmrd_header is not valid XML ({err})") from err

    def triple(space: str, what: str, cast):
        return tuple(cast(_text(root, ("encoding", space, what, k), source)) for k in ("x", "y", "z"))

    def optional(path):
        try:
            return int(_text(root, path, source))
        except ValueError:
            return None

    limits = ("encoding", "encodingLimits", "kspace_encoding_step_1")
    try:
        enc_fov, rec_fov = (
            triple("encodedSpace", "fieldOfView_mm", float),
            triple("reconSpace", "fieldOfView_mm", float),
        )
    except ValueError:
        enc_fov, rec_fov = (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)
    return FastMRIHeader(
        encoding_size=triple("encodedSpace", "matrixSize", int),
        recon_size=triple("reconSpace", "matrixSize", int),
        encoding_fov_mm=enc_fov,
        recon_fov_mm=rec_fov,
        kspace_center=optional((*limits, "center")),
        kspace_maximum=optional((*limits, "maximum")),
    )


def make_ismrmrd_header(
    encoding_size: Sequence[int],
    recon_size: Sequence[int],
    *,
    encoding_fov_mm: Sequence[float] | None = None,
    recon_fov_mm: Sequence[float] | None = None,
    kspace_center: int | None = None,
    kspace_maximum: int | None = None,
    system: str = "ambient-science synthetic",
) -> str:
    """A minimal ISMRMRD XML header with the fields fastMRI readers use.

    Defaults: every phase-encode column acquired (``center = enc_y // 2``, ``maximum = enc_y - 1``), fields
    of view 1 mm per pixel (recon FOV = recon size).
    """
    enc = [int(s) for s in (*encoding_size, 1)[:3]]
    rec = [int(s) for s in (*recon_size, 1)[:3]]
    enc_fov = list(encoding_fov_mm) if encoding_fov_mm is not None else [float(s) for s in enc]
    rec_fov = list(recon_fov_mm) if recon_fov_mm is not None else [float(s) for s in rec]
    center = enc[1] // 2 if kspace_center is None else int(kspace_center)
    maximum = enc[1] - 1 if kspace_maximum is None else int(kspace_maximum)

    def xyz(tag, values, fmt):
        return f"<{tag}>" + "".join(f"<{k}>{fmt(v)}</{k}>" for k, v in zip("xyz", values)) + f"</{tag}>"

    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<ismrmrdHeader xmlns="{_NS}">'
        f"<acquisitionSystemInformation><systemModel>{system}</systemModel></acquisitionSystemInformation>"
        "<encoding>"
        "<encodedSpace>" + xyz("matrixSize", enc, int) + xyz("fieldOfView_mm", enc_fov, float) + "</encodedSpace>"
        "<reconSpace>" + xyz("matrixSize", rec, int) + xyz("fieldOfView_mm", rec_fov, float) + "</reconSpace>"
        "<encodingLimits><kspace_encoding_step_1>"
        f"<minimum>0</minimum><maximum>{maximum}</maximum><center>{center}</center>"
        "</kspace_encoding_step_1></encodingLimits>"
        "<trajectory>cartesian</trajectory>"
        "</encoding></ismrmrdHeader>"
    )
