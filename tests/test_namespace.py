"""The package namespace ``ambient_science``: the public names load lazily (PEP 562), and the first sampling or
training name registers the built-in operator families (docs/design.md §2)."""

from __future__ import annotations

import json
import subprocess
import sys

import ambient_science


def _run(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (a clean ``sys.modules``); it prints one JSON line."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_is_light():
    """``import ambient_science`` loads no torch and none of the package's modules but the version."""
    got = _run(
        "import json, sys; import ambient_science; "
        "print(json.dumps({'torch': 'torch' in sys.modules, "
        "'ours': sorted(m for m in sys.modules if m.startswith('ambient_science')), "
        "'version': ambient_science.__version__}))"
    )
    assert got["torch"] is False
    assert got["ours"] == ["ambient_science", "ambient_science.version"]
    assert got["version"] == ambient_science.__version__


def test_user_imports_work_and_register_the_families():
    got = _run(
        "import json, sys\n"
        "from ambient_science import reconstruct, Prior, train, pretrained\n"
        "from ambient_science.registry import family_classes\n"
        "print(json.dumps({'families': sorted(family_classes()), 'reconstruct': reconstruct.__module__, "
        "'Prior': Prior.__module__, 'train': train.__module__, 'pretrained': pretrained.__name__}))"
    )
    assert {"pixel_mask", "box_mask", "clean", "cartesian_mri", "interferometer"} <= set(got["families"])
    assert got["reconstruct"] == "ambient_science.sampling.reconstruction"
    assert got["Prior"] == "ambient_science.sampling.prior"
    assert got["train"] == "ambient_science.pipelines.training"
    assert got["pretrained"] == "ambient_science.pretrained"


def test_all_names_resolve_and_are_listed():
    assert set(ambient_science.__all__) == set(ambient_science._LAZY) | {"__version__"}
    assert len(ambient_science.__all__) == len(set(ambient_science.__all__))
    for name in ambient_science.__all__:
        assert getattr(ambient_science, name) is not None, name
        assert name in dir(ambient_science)
    from ambient_science.linop import LinearOperator
    from ambient_science.sampling.prior import load_prior

    assert ambient_science.LinearOperator is LinearOperator
    assert ambient_science.load_prior is load_prior


def test_unknown_name_is_an_attribute_error():
    try:
        ambient_science.no_such_name  # noqa: B018
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:  # pragma: no cover
        raise AssertionError("expected an AttributeError")
