"""``p2m+vm``: PAMRFuse+'s P2M, then VoxelMorph between pseudo-MRI and MRI (paper Table 1).

It belongs to this plugin because it is half PAMRFuse+: the pseudo-MRI comes from the P2M generator
of the shipped PAMRFuse+ weights. VoxelMorph's network and training come from the ``baselines``
plugin (one direction only: ``baselines`` never imports ``pamrfuse``). The paper's protocol
registers before fusing with it, so it declares itself the default registration of every run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from baselines.registration.voxelmorph import LearnedRegistration
from fusionbench.methods import register_method
from fusionbench.nn.training import state_digest
from fusionbench.weights import WeightsError

from .method import WEIGHTS_DIR, PAMRFusePlus
from .p2m import translate
from .presets import get_config

__all__ = ["P2MVoxelMorph"]


@register_method("p2m+vm", kind="registration", default_registration=True,
                 reference="Zhong et al. 2024, Table 1 (P2M+VM): PAMRFuse+'s P2M, then VoxelMorph "
                           "(Balakrishnan et al. 2019) between pseudo-MRI and MRI with local NCC")
class P2MVoxelMorph(LearnedRegistration):
    """P2M then VoxelMorph: the PAT becomes a pseudo-MRI, registered mono-modally to the MRI.

    The pseudo-MRI comes from the P2M generator of the shipped PAMRFuse+ weights (``p2m_preset``),
    run at that preset's training resolution, which is also VoxelMorph's working size. The flow
    found between pseudo-MRI and MRI (local NCC, 9×9) is applied to the PAT itself. The
    ``train_config`` names the digest of that generator's parameters, so a new P2M makes the
    shipped and cached VoxelMorph weights stale instead of silently reused.
    """

    weights_name = "p2m_vm"

    def shipped_weights(self) -> Path:
        return WEIGHTS_DIR / self.weights_name

    def __init__(self, loss: str = "ncc", p2m_preset: str = "lite", **kwargs: Any):
        self.p2m_preset = p2m_preset
        self._p2m: PAMRFusePlus | None = None
        kwargs.setdefault("size", get_config(p2m_preset).size)
        super().__init__(loss=loss, **kwargs)

    def p2m_model(self) -> PAMRFusePlus:
        """The PAMRFuse+ model whose P2M generator makes the pseudo-MRI (shipped weights)."""
        if self._p2m is None:
            model = PAMRFusePlus(preset=self.p2m_preset, device="cpu")
            if not model.provenance:
                raise WeightsError(f"p2m+vm needs the shipped PAMRFuse+ {self.p2m_preset!r} weights for its "
                                   f"P2M generator ({model.shipped_weights()}); train them with "
                                   f"`fusionbench fit pamrfuse+ --preset {self.p2m_preset} --ship`")
            self._p2m = model
        return self._p2m

    def train_config(self) -> dict[str, Any]:
        # Keyed on the P2M generator alone: PAMRFuse+ weights that differ only in MLR or DFDF (a
        # longer stage II, another fusion loss) make the same pseudo-MRI and keep these weights.
        return {**super().train_config(), "p2m_preset": self.p2m_preset,
                "p2m_generator": state_digest(self.p2m_model().net.p2m.g_pm)}

    def network_input(self, moving: np.ndarray) -> np.ndarray:
        return translate(super().network_input(moving), self.p2m_model().net.p2m.g_pm, device=self.device)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_p2m"] = None  # reloaded from the shipped weights in a worker
        return state
