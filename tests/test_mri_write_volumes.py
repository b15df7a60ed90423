"""The MRI pipeline's synthetic volumes written by worker processes are the serial writer's files."""

import h5py
import numpy as np

from ambient_science.datasets.synthetic_knee import write_synthetic_knee_dataset
from ambient_science.pipelines.mri import write_volumes


def test_parallel_writing_gives_the_serial_files(tmp_path):
    sizes = {"recon_size": (16, 16), "num_slices": 2, "num_coils": None}
    serial = write_synthetic_knee_dataset(tmp_path / "serial", 4, seed=3, overwrite=True, **sizes)
    parallel = write_volumes(tmp_path / "parallel", 4, seed=3, workers=2, **sizes)
    assert [p.name for p in parallel] == [p.name for p in serial]
    for a, b in zip(serial, parallel):
        with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
            assert sorted(fa.keys()) == sorted(fb.keys())
            for key in fa.keys():
                np.testing.assert_array_equal(fa[key][()], fb[key][()])
            assert dict(fa.attrs) == dict(fb.attrs)
    assert write_volumes(tmp_path / "one", 1, seed=3, workers=2, **sizes)[0].name == serial[0].name  # in-process
