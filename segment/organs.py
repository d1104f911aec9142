"""Multi-organ segmentation trained per image source (paper §4.3.2, Table 4).

The seed paper trains SFE-GCN (Liang et al., Med. Image Anal. 2025), an organ-level instance
segmentation network, once per image source (PAT, MRI and every method's fused images) and
reports the per-organ DSC. SFE-GCN needs CUDA deformable convolutions and pretrained weights, so
this module uses the substitute of the planning notes (§2c): a MONAI ``UNet`` trained for
semantic segmentation of all :data:`fusionbench.data.ORGANS` with ``DiceCELoss``, then connected
components for instances. What makes the comparison fair is kept from the paper: the same
architecture, training budget and seed for every source (:data:`PRESETS`), so differences come
from the images. Each source's configuration is saved as JSON next to its weights.

The organ task's public names, from the modules that hold one idea each:

* :mod:`segment.organ_data`: stacking and checking images and label maps, the fixed centre
  window, class weights, the training-data hash;
* :mod:`segment.organ_unet`: the U-Net recipe, training (:func:`train_unet`) and sliding-window
  inference (:func:`predict_proba`);
* :mod:`segment.organ_model`: the presets and training configuration, :class:`OrganModel` (fit,
  save with its record, load, predict);
* :mod:`segment.organ_training`: one model per source with the same configuration
  (:func:`train_sources`: reuse of saved models, worker processes, Dask);
* :mod:`segment.organ_scoring`: per-image DSC and instance counts (:func:`score_organs`) as the
  core's long-form result rows (:func:`organ_rows`); Table 4 is :func:`segment.report.organ_table`.
"""
from __future__ import annotations

from .organ_data import centre_window, class_weights
from .organ_model import PRESETS, OrganModel, training_config
from .organ_scoring import TABLE4_ORGANS, count_instances, organ_rows, score_organs
from .organ_training import train_sources
from .organ_unet import predict_proba, train_unet

__all__ = ["PRESETS", "TABLE4_ORGANS", "OrganModel", "train_unet", "predict_proba", "count_instances",
           "score_organs", "organ_rows", "train_sources", "training_config", "class_weights",
           "centre_window"]
