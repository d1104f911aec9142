"""MEF-GAN: multi-exposure image fusion GAN (Xu, Ma, Zhang, IEEE TIP 29, 2020).

Re-written in plain torch from its description (``baselines.md`` §2.10; the authors' TensorFlow
code is ``hanna-xu/MEF-GAN``):

* **Generator** (487 582 parameters), RGB over- and under-exposed images in (6 channels), RGB out.
  Every conv is 3×3 with reflect padding, followed by batch norm (also the last one) and, but for
  the last, LeakyReLU 0.2; spectral norm on the marked convs.

  - Local branch: five densely connected convs to 40 channels (inputs 6/40/80/120/160, the first
    without spectral norm); its output is the concatenation of all five (200 channels).
  - Self-attention branch: conv 6→16 stride 2 → max-pool 2 → conv 16→32 stride 2 (spectral norm)
    → SAGAN attention at 1/8 resolution (1×1 convs f, g to C/4 and h to C, spectral norm; softmax
    of ``g fᵀ`` over positions; ``x + γ o`` with a learned scalar γ) → nearest ×2 → conv 32→20 →
    ×2 → conv 20→16 → ×2.
  - Merge: concatenation (216 channels) → conv 216→128 → 128→64 (spectral norm) → 64→3 (no
    spectral norm, no activation), ``tanh / 2 + 0.5``.

  The attention branch needs sides divisible by 8: the reference crops its test images to a
  multiple of 8; we pad by reflection and crop the output back, so every pixel is fused.
* **Discriminator** (for 144² patches): convs 3→64→64→96→128→256 stride 2 with spectral norm and
  256→512 stride 1 without, LeakyReLU 0.2, a dense layer to one unit, ``tanh / 2 + 0.5``.
* **Loss** (supervised by a reference fused image ``GT``):
  ``L_G = -log D(G) + 500 [MSE_RGB(G, GT) + 0.6 ‖∇gray(GT) - ∇gray(G)‖₁ / (H W)]`` with ∇ the
  1/8-around, -1-centre kernel and ``gray`` TensorFlow's ``rgb_to_grayscale`` (ITU-R 601 weights);
  ``L_D`` binary cross-entropy.
* **Training** (:meth:`MEFGAN.train_step`): G Adam (β = (0, 0.9)), lr 3e-4 decayed by 0.7 per epoch;
  D plain SGD at twice that rate; weights clipped to ±8; one D and one G step per batch, and every
  third batch extra D steps (at most 4 in all) while ``D(G) > 0.6`` or ``D(GT) < 0.4``, then extra G
  steps (at most 8) while ``D(GT) > 0.6`` or ``D(G) < 0.4``.

Use on PAT/MRI. The two modalities take the two "exposure" slots (PAT the first, over-exposed slot,
MRI the second), each grey image repeated to RGB; the fused RGB output is averaged back to grey.
MEF-GAN needs a ground-truth fusion, which PAT/MRI lack and the paper's SICE data set is not
available here, so training uses synthetic exposure stacks (:func:`exposure_pair`): a training
image is the ground truth, and its over- and under-exposed renderings (gain 2^±e on a gamma-2.2
linearised image, clipped, e in [1, 2.5]) are the inputs. This is "MEF-GAN architecture and loss,
SICE replaced by synthetic exposures", as recorded in the weights' provenance.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from fusionbench.methods import register_method
from fusionbench.nn.layers import to_tensor

from ._deep import TrainableFusion, TrainingData
from .ddcgan import (TF_BN_EPS, _GeneratorOnlyWeights, adversarial_loss, bce_discriminator_loss, batches_seen,
                     clip_weights_, eight_neighbour_laplacian, tf_truncated_normal_)

__all__ = [
    "MEFGAN", "exposure_stacks", "MEFGANGenerator", "MEFGANDiscriminator", "SelfAttention", "mefgan_generator_loss", "mefgan_content_loss",
    "rgb_to_gray", "exposure_pair", "expected_generator_parameters", "expected_discriminator_parameters",
    "pad_to_multiple", "recalibrate_batch_norm",
]

#: Side multiple required by the self-attention branch (two stride-2 convs and a 2× max-pool).
SIDE_MULTIPLE = 8
#: Smallest training patch: the discriminator's five stride-2 convs must leave a map of 2×2 or more.
MIN_PATCH = 40
#: TensorFlow's rgb_to_grayscale weights (ITU-R BT.601 luma).
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def _conv(cin: int, cout: int, *, k: int = 3, stride: int = 1, sn: bool = True, std: float = 0.5,
          reflect: bool = True) -> nn.Module:
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2,
                     padding_mode="reflect" if reflect and k > 1 else "zeros")
    # The reference initialises with a truncated normal of std 0.5 (0.1 in D); spectral norm
    # rescales the kernels anyway.
    tf_truncated_normal_(conv.weight, std)
    nn.init.zeros_(conv.bias)
    return spectral_norm(conv) if sn else conv


def _bn(channels: int) -> nn.BatchNorm2d:
    # TF defaults: epsilon 1e-3, moving-average decay 0.99 (torch momentum 0.01).
    return nn.BatchNorm2d(channels, eps=TF_BN_EPS, momentum=0.01)


class _ConvBNAct(nn.Module):
    def __init__(self, cin, cout, *, stride=1, sn=True, act=True):
        super().__init__()
        self.conv = _conv(cin, cout, stride=stride, sn=sn)
        self.bn = _bn(cout)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.leaky_relu(x, 0.2) if self.act else x


class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al., ICML 2019) as MEF-GAN uses it: ``x + γ · softmax(g fᵀ) h``."""

    def __init__(self, channels: int):
        super().__init__()
        self.f = _conv(channels, channels // 4, k=1, reflect=False)
        self.g = _conv(channels, channels // 4, k=1, reflect=False)
        self.h = _conv(channels, channels, k=1, reflect=False)
        for conv in (self.f, self.g, self.h):
            # The reference draws these biases from the same truncated normal as the kernels.
            tf_truncated_normal_(conv.bias, 0.5)
        self.gamma = nn.Parameter(tf_truncated_normal_(torch.empty(1), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        f = self.f(x).flatten(2)  # (B, C/4, N)
        g = self.g(x).flatten(2)
        v = self.h(x).flatten(2)  # (B, C, N)
        attention = torch.softmax(torch.bmm(g.transpose(1, 2), f), dim=-1)  # (B, N, N), rows sum to 1
        out = torch.bmm(v, attention.transpose(1, 2)).view(b, c, h, w)
        return x + self.gamma * out


class MEFGANGenerator(nn.Module):
    """MEF-GAN's generator: dense local branch + self-attention branch + merge convs."""

    def __init__(self, in_channels: int = 3, local_width: int = 40, local_layers: int = 5):
        super().__init__()
        cin = 2 * in_channels
        self.local = nn.ModuleList(
            _ConvBNAct(cin if k == 0 else local_width * k, local_width, sn=k > 0) for k in range(local_layers))
        self.sa_down1 = _ConvBNAct(cin, 16, stride=2, sn=False)
        self.sa_down2 = _ConvBNAct(16, 32, stride=2)
        self.attention = SelfAttention(32)
        self.sa_up1 = _ConvBNAct(32, 20)
        self.sa_up2 = _ConvBNAct(20, 16)
        self.merge = nn.Sequential(
            _ConvBNAct(local_width * local_layers + 16, 128),
            _ConvBNAct(128, 64),
            _ConvBNAct(64, in_channels, sn=False, act=False),
        )

    def forward(self, over: torch.Tensor, under: torch.Tensor) -> torch.Tensor:
        x = torch.cat([over, under], dim=1)
        if x.shape[-2] % SIDE_MULTIPLE or x.shape[-1] % SIDE_MULTIPLE:
            raise ValueError(f"MEF-GAN needs sides divisible by {SIDE_MULTIPLE}, got {tuple(x.shape[-2:])}; "
                             "pad with pad_to_multiple first")
        outs = []
        y = x
        for layer in self.local:
            outs.append(layer(y))
            y = torch.cat(outs, dim=1)
        s = F.max_pool2d(self.sa_down1(x), 2)
        s = self.attention(self.sa_down2(s))
        s = self.sa_up1(F.interpolate(s, scale_factor=2, mode="nearest"))
        s = self.sa_up2(F.interpolate(s, scale_factor=2, mode="nearest"))
        s = F.interpolate(s, scale_factor=2, mode="nearest")
        return torch.tanh(self.merge(torch.cat([y, s], dim=1))) / 2 + 0.5


def pad_to_multiple(x: torch.Tensor, multiple: int = SIDE_MULTIPLE) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad (B, C, H, W) at the bottom/right to sides divisible by ``multiple``; returns the old size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph >= h or pw >= w:  # reflection needs more pixels than the pad
        return F.pad(x, (0, pw, 0, ph), mode="replicate"), (h, w)
    return (F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x), (h, w)


class MEFGANDiscriminator(nn.Module):
    """MEF-GAN's discriminator for ``patch``² RGB inputs."""

    def __init__(self, patch: int = 144, channels=(64, 64, 96, 128, 256, 512), in_channels: int = 3):
        super().__init__()
        self.patch = int(patch)
        layers, prev, side = [], in_channels, self.patch
        for i, cout in enumerate(channels):
            last = i == len(channels) - 1
            layers.append(_conv(prev, cout, stride=1 if last else 2, sn=not last, std=0.1))
            side = side if last else (side + 1) // 2
            prev = cout
        self.convs = nn.ModuleList(layers)
        self.dense = nn.Linear(prev * side * side, 1)
        nn.init.xavier_uniform_(self.dense.weight)
        nn.init.zeros_(self.dense.bias)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-2:] != (self.patch, self.patch):
            raise ValueError(f"MEF-GAN discriminator built for {self.patch}² patches, got {tuple(img.shape[-2:])}")
        x = img
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        return torch.tanh(self.dense(x.flatten(1))) / 2 + 0.5


def rgb_to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) → (B, 1, H, W) with TensorFlow's ``rgb_to_grayscale`` weights."""
    w = torch.tensor(GRAY_WEIGHTS, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * w).sum(1, keepdim=True)


def mefgan_content_loss(fused: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``MSE_RGB(G, GT) + 0.6 · mean_b Σ|∇gray(GT) - ∇gray(G)| / (H W)``."""
    mse = (fused - gt).pow(2).mean()
    h, w = fused.shape[-2:]
    grad_diff = eight_neighbour_laplacian(rgb_to_gray(gt)) - eight_neighbour_laplacian(rgb_to_gray(fused))
    gradient = grad_diff.abs().flatten(1).sum(1).mean() / (h * w)
    return mse + 0.6 * gradient


def mefgan_generator_loss(fused, gt, d_fake) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_G, content)`` with ``L_G = -log D(G) + 500 · content``."""
    content = mefgan_content_loss(fused, gt)
    return adversarial_loss(d_fake) + 500.0 * content, content


def exposure_pair(gt: np.ndarray, stops: float, gamma: float = 2.2) -> tuple[np.ndarray, np.ndarray]:
    """Over- and under-exposed renderings of ``gt`` (values in [0, 1]) at ±``stops`` exposure stops.

    The image is linearised with ``gamma``, scaled by ``2**±stops``, clipped to [0, 1] (sensor
    saturation) and re-encoded, so the over-exposed image loses the highlights and the
    under-exposed one compresses the shadows.
    """
    linear = np.clip(gt, 0.0, 1.0) ** gamma
    over = np.clip(linear * 2.0 ** stops, 0.0, 1.0) ** (1.0 / gamma)
    under = np.clip(linear * 2.0 ** -stops, 0.0, 1.0) ** (1.0 / gamma)
    return over.astype(np.float32), under.astype(np.float32)


def _conv_params(cin, cout, k=3):
    return k * k * cin * cout + cout


def expected_generator_parameters(in_channels: int = 3, local_width: int = 40, local_layers: int = 5) -> int:
    """Trainable parameters of the reference generator, layer by layer (convs, BN γ and β, attention γ)."""
    cin = 2 * in_channels

    def block(a, b):
        return _conv_params(a, b) + 2 * b

    local = sum(block(cin if k == 0 else local_width * k, local_width) for k in range(local_layers))
    attention = 2 * _conv_params(32, 8, k=1) + _conv_params(32, 32, k=1) + 1
    sa = block(cin, 16) + block(16, 32) + attention + block(32, 20) + block(20, 16)
    merge = block(local_width * local_layers + 16, 128) + block(128, 64) + block(64, in_channels)
    return local + sa + merge


def expected_discriminator_parameters(patch: int = 144, channels=(64, 64, 96, 128, 256, 512)) -> int:
    total, prev, side = 0, 3, patch
    for i, cout in enumerate(channels):
        total += _conv_params(prev, cout)
        side = side if i == len(channels) - 1 else (side + 1) // 2
        prev = cout
    return total + prev * side * side + 1


@torch.no_grad()
def recalibrate_batch_norm(generator: nn.Module, batches) -> None:
    """Replace the running batch-norm statistics by their exact average over ``batches``.

    TensorFlow's 0.99 moving average needs thousands of steps to forget its initial (0, 1) values;
    short trainings end with statistics that do not describe the data, so they are re-estimated
    once, with the weights fixed, from ``(over, under)`` batches.
    """
    norms = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    generator.train()
    for over, under in batches:
        generator(over, under)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    generator.eval()


def exposure_stacks(gt: torch.Tensor, rng: np.random.Generator, stops=(1.0, 2.5)):
    """(over, under, gt) RGB batches from grey ground-truth crops ``gt`` (B, 1, P, P).

    Each crop gets its own exposure step, uniform in ``stops``; grey is repeated to RGB.
    """
    over, under = [], []
    for crop in gt[:, 0].numpy():
        o, u = exposure_pair(crop, float(rng.uniform(*stops)))
        over.append(o)
        under.append(u)
    rgb = [torch.from_numpy(np.stack(x))[:, None].expand(-1, 3, -1, -1).contiguous() for x in (over, under)]
    return rgb[0], rgb[1], gt.expand(-1, 3, -1, -1).contiguous()


@register_method("mefgan", kind="gan",
                 reference="Xu, Ma, Zhang, IEEE TIP 29 (2020): MEF-GAN (dense + self-attention generator); "
                           "trained by fusionbench on synthetic exposure stacks of the training images")
class MEFGAN(_GeneratorOnlyWeights, TrainableFusion):
    """MEF-GAN fusion: PAT and MRI as the two exposures (PAT first), grey in, grey out.

    Training settings (constructor keywords): ``steps`` batches of ``batch`` synthetic exposure
    stacks of ``patch``² crops (the paper: 144², batch 18, 4 epochs of SICE), whose ground truths
    are crops of the training cases' PAT and MRI images and of scikit-image's bundled pictures;
    ``lr`` (decayed by 0.7 per ``steps_per_epoch``); ``calibration_batches`` batches re-estimate
    the batch-norm statistics after training (see :func:`recalibrate_batch_norm`).
    """

    kind = "gan"
    weights_name = "mefgan"
    #: The settings of the shipped weights. 1100 steps: on phantom 2.0 the validation curve rises
    #: slowly until about step 800.
    train_defaults = {"steps": 1100, "batch": 4, "patch": 144, "lr": 3e-4, "steps_per_epoch": 100,
                      "calibration_batches": 16}
    natural_images = True
    decay, clip = 0.7, 8.0

    def __init__(self, *, steps_per_epoch: int | None = None, calibration_batches: int | None = None, **kw):
        super().__init__(**kw)
        extra = {"steps_per_epoch": steps_per_epoch, "calibration_batches": calibration_batches}
        self.train_settings.update({k: int(v) for k, v in extra.items() if v is not None})
        patch = int(self.train_settings["patch"])
        if patch % SIDE_MULTIPLE or patch < MIN_PATCH:
            raise ValueError(f"MEF-GAN: patch must be a multiple of {SIDE_MULTIPLE} and at least {MIN_PATCH} "
                             f"(the discriminator's last conv needs a 2×2 map), got {patch}")

    def build(self) -> nn.Module:
        return nn.ModuleDict({"g": MEFGANGenerator(), "d": MEFGANDiscriminator(int(self.train_settings["patch"]))})

    def fuse_pair(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        over, (h, w) = pad_to_multiple(to_tensor(ir, self.torch_device).expand(-1, 3, -1, -1))
        under, _ = pad_to_multiple(to_tensor(vis, self.torch_device).expand(-1, 3, -1, -1))
        fused = self.net["g"](over, under)[..., :h, :w].mean(1)
        return fused[0].float().cpu().numpy()

    def sample_batch(self, data: TrainingData, rng: np.random.Generator):
        gt = data.sample_singles(rng, int(self.train_settings["batch"]), int(self.train_settings["patch"]))
        return exposure_stacks(gt, rng)

    def make_optimizers(self):
        lr = float(self.train_settings["lr"])
        return {"g": torch.optim.Adam(self.net["g"].parameters(), lr=lr, betas=(0.0, 0.9)),
                "d": torch.optim.SGD(self.net["d"].parameters(), lr=2 * lr)}

    def loss(self, batch):
        over, under, gt = batch
        fused = self.net["g"](over, under)
        total, content = mefgan_generator_loss(fused, gt, self.net["d"](fused))
        return {"loss": total, "content": content}

    def _step_d(self, over, under, gt):
        with torch.no_grad():
            fused = self.net["g"](over, under)
        loss = bce_discriminator_loss(self.net["d"](gt), self.net["d"](fused))
        opt = self._optimizers["d"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        clip_weights_(self.net["d"], self.clip)
        return float(loss.detach())

    def _step_g(self, batch):
        terms = self.loss(batch)
        opt = self._optimizers["g"]
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        clip_weights_(self.net["g"], self.clip)
        return {k: float(v.detach()) for k, v in terms.items()}

    @torch.no_grad()
    def _d_outputs(self, over, under, gt):
        return float(self.net["d"](self.net["g"](over, under)).mean()), float(self.net["d"](gt).mean())

    def train_step(self, batch) -> dict[str, float]:
        """One batch of the reference schedule (D step, G step, every third batch rebalanced)."""
        if getattr(self, "_optimizers", None) is None:
            self.net.to(self.torch_device)
            self._optimizers = self.make_optimizers()
        self.net.train()
        over, under, gt = self._batch_to_device(batch)
        index = batches_seen(self._optimizers["g"], advance=True)
        rate = float(self.train_settings["lr"]) * self.decay ** (index / int(self.train_settings["steps_per_epoch"]))
        self._optimizers["g"].param_groups[0]["lr"] = rate
        self._optimizers["d"].param_groups[0]["lr"] = 2 * rate
        d_loss = self._step_d(over, under, gt)
        terms = self._step_g((over, under, gt))
        it_d = it_g = 1
        if index % 3 == 0:
            d_fake, d_real = self._d_outputs(over, under, gt)
            while (d_fake > 0.6 or d_real < 0.4) and it_d < 4:
                d_loss = self._step_d(over, under, gt)
                d_fake, d_real = self._d_outputs(over, under, gt)
                it_d += 1
            while (d_real > 0.6 or d_fake < 0.4) and it_g < 8:
                terms = self._step_g((over, under, gt))
                d_fake, d_real = self._d_outputs(over, under, gt)
                it_g += 1
        return {**terms, "d_loss": d_loss, "d_steps": float(it_d), "g_steps": float(it_g)}

    def _calibration_batches(self, data: TrainingData) -> list[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, 2])  # its own stream: the training's is untouched
        batches = []
        for _ in range(int(self.train_settings["calibration_batches"])):
            over, under, _ = exposure_stacks(
                data.sample_singles(rng, int(self.train_settings["batch"]), int(self.train_settings["patch"])), rng)
            batches.append((over.to(self.torch_device), under.to(self.torch_device)))
        return batches

    def train(self, data: TrainingData, **kw):
        history = super().train(data, **kw)
        recalibrate_batch_norm(self.net["g"], self._calibration_batches(data))
        self.net.eval()
        return history

    def prepare_validation(self, data: TrainingData):
        """Score the generator as it will be shipped: with recalibrated batch-norm statistics.
        The generator's whole state (running statistics and the spectral norms' power-iteration
        vectors, which the calibration's forward passes move) is put back afterwards, so that
        training goes on exactly as without the scoring."""
        generator = self.net["g"]
        saved = {k: v.clone() for k, v in generator.state_dict().items()}
        recalibrate_batch_norm(generator, self._calibration_batches(data))
        return lambda: generator.load_state_dict(saved)
