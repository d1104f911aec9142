"""PAMRFuse+ (Zhong et al. 2024): P2M style transfer, MLR registration, DFDF fusion, two-stage training.

Modules: :mod:`~pamrfuse.presets` (configurations), :mod:`~pamrfuse.p2m`, :mod:`~pamrfuse.mlr`,
:mod:`~pamrfuse.dfdf` (the three networks), :mod:`~pamrfuse.losses`, :mod:`~pamrfuse.model` (the
whole network and its training arrays), :mod:`~pamrfuse.trainer` (two-stage training,
checkpoints), :mod:`~pamrfuse.monitor` (progress and loss curves), :mod:`~pamrfuse.method` (the
registered ``pamrfuse+`` and its weights) and :mod:`~pamrfuse.p2m_vm` (``p2m+vm``).

Importing :mod:`pamrfuse.method` registers ``pamrfuse+`` and its Table 5 ablation variants, and
:mod:`pamrfuse.p2m_vm` registers ``p2m+vm`` (entry points ``fusionbench.methods``: ``pamrfuse =
"pamrfuse.method"``, ``pamrfuse-p2m-vm = "pamrfuse.p2m_vm"``). This package module stays
import-light; the torch modules are imported on demand.
"""
__all__ = ["dfdf", "losses", "method", "mlr", "model", "monitor", "p2m", "p2m_vm", "presets", "trainer"]
