"""PAMRFuse+ (Zhong et al. 2024): P2M style transfer, MLR registration, DFDF fusion, two-stage training.

Importing :mod:`pamrfuse.method` registers ``pamrfuse+`` and its Table 5 ablation variants
(entry point ``fusionbench.methods``: ``pamrfuse = "pamrfuse.method"``). This package module stays
import-light; the torch modules are imported on demand.
"""
__all__ = ["dfdf", "losses", "method", "mlr", "p2m", "presets", "train"]
