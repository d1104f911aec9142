"""Speed of the NSCT and MWGF baselines on a 256 x 256 pair (target: under 3 s each on one core)."""
import numpy as np
import pytest
from skimage import data

from baselines.fusion.mwgf import MWGF
from baselines.fusion.nsct import NSCTFusion

PAT = data.camera()[::2, ::2].astype(np.float32) / 255
MRI = np.ascontiguousarray(PAT[::-1, :])


@pytest.mark.parametrize("method", [NSCTFusion, MWGF], ids=["nsct", "mwgf"])
def test_fusion_speed_256(benchmark, method):
    fuser = method()
    fuser.fuse(PAT, MRI)  # warm the filter cache
    out = benchmark(fuser.fuse, PAT, MRI)
    assert out.shape == PAT.shape
