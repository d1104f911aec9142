"""U2Fusion: unified unsupervised fusion network (Xu, Ma, Jiang, Guo, Ling, IEEE TPAMI 44(1), 2022).

Re-written in plain torch from its description (``baselines.md`` §2.13; the authors' TensorFlow
code is ``hanna-xu/U2Fusion``):

* **Network** (659 217 parameters). Input ``[I1, I2]``. A 3×3 conv 2→44, then five dense 3×3 convs
  to 44 channels, each seeing ``[own output, its input]`` (inputs 44/88/132/176/220; 264 channels
  out); decoder 264→128→64→32→1. LeakyReLU 0.2 after every conv but the last, whose output goes
  through ``tanh / 2 + 0.5``. Reflect padding, no batch norm.
* **Information measurement.** Each source's VGG-16 features at conv1_2, conv2_2, conv3_3, conv4_3
  and conv5_3 (after ReLU), computed on the source resized (nearest) to 224², give
  ``g_k = mean_l mean((∇ φ_l(I_k))²)`` with ∇ the 1/8-around, -1-centre kernel applied per channel.
  The adaptive weights are ``(ω1, ω2) = softmax(g1 / c, g2 / c)`` (c = 3200 for visible/infrared
  and multi-modal fusion). They depend on the sources only, so they are computed without gradients.
* **Loss.** ``Σ_k ω_k (1 - SSIM(F, I_k)) + 20 Σ_k ω_k ‖F - I_k‖²_F / (H W)`` with SSIM on an
  11×11 Gaussian window (σ 1.5), 'valid' filtering, L = 1, averaged per image.
* **Training** (:class:`U2Fusion`): RMSProp, lr 1e-4, decay 0.6, momentum 0.15, weights
  clipped to ±50, 64² patches, the order of the two sources swapped at random for each batch.
  The paper trains three tasks in sequence with elastic weight consolidation; with one task (our
  PAT/MRI pairs) EWC does not apply, and the released ``main.py`` sets its λ to 0 as well.

Feature network. The reference used Caffe VGG-16 weights (BGR, 0..255, mean subtracted). We use
:func:`fusionbench.nn.vgg.vgg16_features`: torchvision's ImageNet VGG-16 when installed, whose
input is ``(x - mean) / std`` in [0, 1] units, i.e. about 255 · 0.226 ≈ 58 times smaller than
Caffe's. The features shrink by the same factor and ``g`` by its square, so ``c`` is given in the
reference's Caffe units and divided by ``(255 · 0.226)²`` before use; the softmax then sees the same
numbers as the reference. Without ImageNet weights a seeded random VGG-16 is used (with a warning)
and the weights record says so.

A deviation kept on purpose: the reference multiplies its (B,) weights with a (B, 1) MSE term,
which broadcasts to a (B, B) matrix, so each patch's MSE is weighted by the batch mean of ω; we
weight each patch's terms by its own ω, as the paper's equation states.

PAT takes the first (infrared/functional) slot and MRI the second (visible/anatomical) one; the
network is symmetric in training (random swaps), so the order matters little.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusionbench.methods import register_method
from fusionbench.nn.layers import to_tensor
from fusionbench.nn.losses import ssim

from ._deep import TrainableFusion, TrainingData
from .ddcgan import clip_weights_, eight_neighbour_laplacian, tf_truncated_normal_

__all__ = [
    "U2Fusion", "U2FusionNet", "expected_u2fusion_parameters", "u2fusion_loss", "information_weights",
    "feature_gradient_energy", "VGG_TAPS", "CAFFE_TO_TORCHVISION",
]

#: Slice ends of torchvision's ``vgg16().features`` after the ReLUs of conv1_2, conv2_2, conv3_3,
#: conv4_3 and conv5_3.
VGG_TAPS = (4, 9, 16, 23, 30)
#: Ratio of the reference's feature energies to those of torchvision-normalised input (see module doc).
CAFFE_TO_TORCHVISION = (255.0 * 0.226) ** 2


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1, padding_mode="reflect")
    tf_truncated_normal_(conv.weight, 0.05)
    nn.init.zeros_(conv.bias)
    return conv


class U2FusionNet(nn.Module):
    """U2Fusion's DenseNet generator."""

    def __init__(self, width: int = 44, dense_layers: int = 5, decoder=(128, 64, 32)):
        super().__init__()
        self.conv_in = _conv3x3(2, width)
        self.dense = nn.ModuleList(_conv3x3(width * (k + 1), width) for k in range(dense_layers))
        layers, prev = [], width * (dense_layers + 1)
        for cout in decoder:
            layers.append(_conv3x3(prev, cout))
            prev = cout
        self.decoder = nn.ModuleList(layers)
        self.conv_out = _conv3x3(prev, 1)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv_in(torch.cat([first, second], dim=1)), 0.2)
        for conv in self.dense:
            x = torch.cat([F.leaky_relu(conv(x), 0.2), x], dim=1)
        for conv in self.decoder:
            x = F.leaky_relu(conv(x), 0.2)
        return torch.tanh(self.conv_out(x)) / 2 + 0.5


def expected_u2fusion_parameters(width: int = 44, dense_layers: int = 5, decoder=(128, 64, 32)) -> int:
    """Parameters of the reference network, counted conv by conv (3×3 kernel + bias)."""
    def conv(cin, cout):
        return 9 * cin * cout + cout

    total = conv(2, width) + sum(conv(width * (k + 1), width) for k in range(dense_layers))
    prev = width * (dense_layers + 1)
    for cout in decoder:
        total += conv(prev, cout)
        prev = cout
    return total + conv(prev, 1)


def feature_gradient_energy(features: list[torch.Tensor]) -> torch.Tensor:
    """``mean_l mean((∇ φ_l)²)`` per image, shape (B,): U2Fusion's information measure ``g``."""
    per_layer = [eight_neighbour_laplacian(f).pow(2).flatten(1).mean(1) for f in features]
    return torch.stack(per_layer, dim=1).mean(1)


@torch.no_grad()
def information_weights(vgg: nn.Module, first: torch.Tensor, second: torch.Tensor, c: float = 3200.0,
                        *, normalize: bool = True, size: int = 224) -> torch.Tensor:
    """U2Fusion's adaptive weights (B, 2) for the two sources (B, 1, h, w) in [0, 1].

    ``c`` is in the reference's Caffe units; with torchvision-normalised input (``normalize``) it is
    divided by :data:`CAFFE_TO_TORCHVISION` so that the softmax sees the reference's numbers.
    """
    from fusionbench.nn.vgg import extract

    energies = []
    for src in (first, second):
        resized = F.interpolate(src, size=(size, size), mode="nearest")
        energies.append(feature_gradient_energy(extract(vgg, resized, VGG_TAPS, normalize=normalize)))
    scale = c / CAFFE_TO_TORCHVISION if normalize else c
    return torch.softmax(torch.stack(energies, dim=1) / scale, dim=1)


def u2fusion_loss(fused: torch.Tensor, first: torch.Tensor, second: torch.Tensor,
                  weights: torch.Tensor) -> torch.Tensor:
    """``mean_b Σ_k ω_bk [(1 - SSIM(F, I_k)) + 20 ‖F - I_k‖²_F / (H W)]``; ``weights`` is (B, 2)."""
    if weights.shape != (fused.shape[0], 2):
        raise ValueError(f"weights must be (B, 2) = ({fused.shape[0]}, 2), got {tuple(weights.shape)}")
    total = 0.0
    for k, src in enumerate((first, second)):
        dissimilarity = 1.0 - ssim(fused, src, reduction="none")
        mse = (fused - src).pow(2).flatten(1).mean(1)
        total = total + weights[:, k] * (dissimilarity + 20.0 * mse)
    return total.mean()


@register_method("u2fusion", kind="cnn",
                 reference="Xu, Ma, Jiang, Guo, Ling, IEEE TPAMI 44(1) (2022): U2Fusion DenseNet, VGG-16 "
                           "information-measured adaptive weights; unsupervised, trained by fusionbench on PAT/MRI pairs")
class U2Fusion(TrainableFusion):
    """U2Fusion fusion (PAT in the first/infrared slot, MRI in the second/visible slot).

    Training settings (constructor keywords): ``steps`` batches of ``batch`` crops of ``patch``²
    (the paper: 64², batch 18) drawn from a fixed set of ``pool`` aligned crops whose adaptive
    weights are measured once before training (they depend on the sources only); ``lr``; ``c`` the
    temperature in the reference's units (3200 for multi-modal fusion); ``vgg`` the feature
    weights (``"auto"``: ImageNet when installed, else random with a warning; ``"imagenet"``;
    ``"random"``); ``vgg_size`` the side the sources are resized to for VGG (224 as in the paper).
    """

    kind = "cnn"
    weights_name = "u2fusion"
    #: The settings of the shipped weights (a CPU budget; the paper trains far longer).
    train_defaults = {"steps": 2000, "batch": 4, "patch": 48, "lr": 1e-4, "pool": 32, "c": 3200.0,
                      "vgg": "auto", "vgg_size": 112}
    natural_images = False
    clip = 50.0

    def __init__(self, *, pool: int | None = None, c: float | None = None, vgg: str | None = None,
                 vgg_size: int | None = None, **kw):
        super().__init__(**kw)
        extra = {"pool": pool, "c": c, "vgg": vgg, "vgg_size": vgg_size}
        self.train_settings.update({k: v for k, v in extra.items() if v is not None})
        if self.train_settings["vgg"] not in ("auto", "imagenet", "random"):
            raise ValueError(f"U2Fusion: vgg must be 'auto', 'imagenet' or 'random', got {self.train_settings['vgg']!r}")
        if not float(self.train_settings["c"]) > 0:
            raise ValueError(f"U2Fusion: c must be positive, got {self.train_settings['c']}")
        self._pool = None

    def build(self) -> nn.Module:
        return U2FusionNet()

    def fuse_pair(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        fused = self.net(to_tensor(ir, self.torch_device), to_tensor(vis, self.torch_device))
        return fused[0, 0].float().cpu().numpy()

    def _measured_pool(self, data: TrainingData):
        """The fixed crop set and its adaptive weights, drawn from its own seeded stream.

        Its own stream keeps the pool identical when a checkpointed run resumes.
        """
        if self._pool is not None and self._pool[0] is data:
            return self._pool[1:]
        from fusionbench.nn.vgg import vgg16_features

        cfg = self.train_settings
        rng = np.random.default_rng([self.seed, 1])
        pairs = data.sample_pairs(rng, int(cfg["pool"]), int(cfg["patch"]))
        slot = {"pat": 0, "mri": 1}
        first = pairs[:, slot[self.roles["ir"]]][:, None].contiguous()
        second = pairs[:, slot[self.roles["vis"]]][:, None].contiguous()
        vgg, self.feature_network = vgg16_features(cfg["vgg"], seed=self.seed)
        vgg = vgg.to(self.torch_device)
        weights = torch.cat([
            information_weights(vgg, first[i:i + 8].to(self.torch_device), second[i:i + 8].to(self.torch_device),
                                float(cfg["c"]), size=int(cfg["vgg_size"])).cpu()
            for i in range(0, len(first), 8)])
        self._pool = (data, first, second, weights)
        return first, second, weights

    def sample_batch(self, data: TrainingData, rng: np.random.Generator):
        first, second, weights = self._measured_pool(data)
        idx = torch.from_numpy(rng.choice(len(first), size=min(int(self.train_settings["batch"]), len(first)),
                                          replace=False))
        batch = (first[idx], second[idx], weights[idx])
        if rng.integers(2):  # the reference swaps the source order at random for each batch
            batch = (batch[1], batch[0], batch[2].flip(1))
        return batch

    def make_optimizers(self):
        # TF1 RMSPropOptimizer(decay=0.6, momentum=0.15).
        return {"net": torch.optim.RMSprop(self.net.parameters(), lr=float(self.train_settings["lr"]), alpha=0.6,
                                           momentum=0.15, eps=1e-10)}

    def loss(self, batch):
        first, second, weights = batch
        return u2fusion_loss(self.net(first, second), first, second, weights)

    def train_step(self, batch) -> dict[str, float]:
        terms = super().train_step(batch)
        clip_weights_(self.net, self.clip)
        return terms

    def __getstate__(self):
        state = super().__getstate__()
        state["_pool"] = None  # training-only cache (crops, their weights and the data); recomputed on demand
        return state

    def training_metrics(self) -> dict[str, Any]:
        if self._pool is None:
            return {}
        return {"feature_network": getattr(self, "feature_network", None),
                "mean_information_weights": [round(float(v), 4) for v in self._pool[3].mean(0)]}
