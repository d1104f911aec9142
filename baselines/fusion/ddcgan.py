"""DDcGAN: dual-discriminator conditional GAN fusion (Ma, Xu, Jiang, Mei, Zhang, IEEE TIP 29, 2020).

The same-resolution visible/infrared model of the authors' TensorFlow code (``hanna-xu/DDcGAN``,
``same-resolution vis-ir image fusion/``), re-written in plain torch from its description
(``baselines.md`` §2.12):

* **Generator** (1 097 665 parameters). Input ``[vis, ir]`` (2 channels). Encoder: a 3×3 conv
  2→48 and a dense block of four 3×3 convs to 48 channels, each seeing the concatenation
  ``[own output, its input]`` (inputs 48/96/144/192), 240 channels out. Decoder: 240→240 →128 →64
  →32 →1, ``tanh / 2 + 0.5``. Batch norm + ReLU after every conv but the last; reflect padding.
  Two quirks of the reference are kept: the first decoder conv is applied **twice with shared
  weights** (first without, then with batch norm), and batch norm always normalises with the
  statistics of the batch it sees (``training=True`` also at test time), so a single test image is
  normalised by its own per-channel statistics.
* **Two discriminators** (D1 tells the fused image from the visible one, D2 from the infrared one):
  3×3 convs 1→16→32→64, stride 2, reflect padding, ReLU, batch norm on the 2nd and 3rd; a dense
  layer to one unit, ``tanh / 2 + 0.5``. The dense layer's size follows the patch size (84² in the
  paper: 11·11·64 inputs).
* **Loss.** ``L_G = -log D1(G) - log D2(G) + 0.6 (‖G - ir‖²_F / 16 + 1.2 ‖∇G - ∇vis‖₁)`` with ∇ the
  3×3 kernel of 1/8 around a -1 centre (zero padding), norms summed over pixels and averaged over
  the batch; ``L_D`` the binary cross-entropy of each discriminator.
* **Training** (:meth:`DDcGAN.train_step`). RMSProp for G, SGD for the Ds, learning rate 2e-4 decayed by
  0.9 per epoch, weights clipped to ±8; batches alternate: even batches train D1 and D2 (repeated
  while their loss is above 1.7, at most 20 times), odd batches train G (then adversarial-only G
  steps while either D loss is below 1.4, and full G steps while L_G is above 200, at most 20).

Roles: PAT goes in the infrared slot (intensity term, D2), MRI in the visible slot (gradient term,
D1), the project's convention for asymmetric methods. The method is unsupervised, so it trains on
registered PAT/MRI pairs as they are (the paper trained on TNO patches; the official checkpoint is
not available).
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusionbench.methods import register_method
from fusionbench.nn.layers import to_tensor

from ._deep import TrainableFusion, TrainingData

__all__ = [
    "DDcGAN", "batches_seen",
    "DDcGANGenerator", "DDcGANDiscriminator", "eight_neighbour_laplacian", "ddcgan_generator_loss",
    "ddcgan_content_loss", "bce_discriminator_loss", "adversarial_loss", "expected_generator_parameters",
    "expected_discriminator_parameters", "discriminator_size", "tf_truncated_normal_",
    "clip_weights_",
]

#: eps inside the logarithms of the reference's adversarial losses.
LOG_EPS = 1e-8
#: TensorFlow's batch-norm epsilon (``tf.layers.batch_normalization`` default).
TF_BN_EPS = 1e-3


def tf_truncated_normal_(weight: torch.Tensor, std: float) -> torch.Tensor:
    """In-place ``tf.truncated_normal(stddev=std)``: normal, re-drawn beyond two standard deviations."""
    return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


def clip_weights_(module: nn.Module, bound: float) -> None:
    """Clip every parameter of ``module`` to ``[-bound, bound]`` (the references' ``clip_by_value``)."""
    with torch.no_grad():
        for p in module.parameters():
            p.clamp_(-bound, bound)


def eight_neighbour_laplacian(img: torch.Tensor) -> torch.Tensor:
    """The references' "gradient": 3×3 kernel of 1/8 around a -1 centre, zero ('SAME') padding.

    Applied to every channel separately; (B, C, H, W) in, (B, C, H, W) out. A constant image gives
    zero inside and ``-3/8`` (edges) or ``-5/8`` (corners) of the constant on the border, as
    TensorFlow's 'SAME' zero padding does.
    """
    kernel = torch.full((3, 3), 1.0 / 8.0, dtype=img.dtype, device=img.device)
    kernel[1, 1] = -1.0
    channels = img.shape[1]
    weight = kernel.expand(channels, 1, 3, 3)
    return F.conv2d(img, weight, padding=1, groups=channels)


def _conv3x3(cin: int, cout: int, stride: int = 1, std: float = 0.05) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode="reflect")
    tf_truncated_normal_(conv.weight, std)
    nn.init.zeros_(conv.bias)
    return conv


def _batch_statistics_norm(channels: int) -> nn.BatchNorm2d:
    # track_running_stats=False: always the batch's own statistics, as the reference's
    # batch_normalization(training=True) at both training and test time.
    return nn.BatchNorm2d(channels, eps=TF_BN_EPS, track_running_stats=False)


class DDcGANGenerator(nn.Module):
    """DDcGAN's same-resolution generator: DenseFuse-style dense encoder, 5-conv decoder."""

    def __init__(self, width: int = 48, dense_layers: int = 4, decoder=(240, 128, 64, 32)):
        super().__init__()
        self.conv_in = _conv3x3(2, width)
        self.norm_in = _batch_statistics_norm(width)
        self.dense = nn.ModuleList(_conv3x3(width * (k + 1), width) for k in range(dense_layers))
        self.dense_norms = nn.ModuleList(_batch_statistics_norm(width) for _ in range(dense_layers))
        code = width * (dense_layers + 1)
        if decoder[0] != code:
            raise ValueError(f"the first decoder conv is applied twice, so it must map {code} -> {code} "
                             f"channels, got {decoder[0]}")
        self.decoder = nn.ModuleList()
        self.decoder_norms = nn.ModuleList()
        prev = code
        for cout in decoder:
            self.decoder.append(_conv3x3(prev, cout))
            self.decoder_norms.append(_batch_statistics_norm(cout))
            prev = cout
        self.conv_out = _conv3x3(prev, 1)

    def forward(self, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm_in(self.conv_in(torch.cat([vis, ir], dim=1))))
        for conv, norm in zip(self.dense, self.dense_norms):
            x = torch.cat([F.relu(norm(conv(x))), x], dim=1)
        x = F.relu(self.decoder[0](x))  # the shared first decoder conv, once without batch norm
        for conv, norm in zip(self.decoder, self.decoder_norms):
            x = F.relu(norm(conv(x)))
        return torch.tanh(self.conv_out(x)) / 2 + 0.5


def discriminator_size(patch: int, convs: int = 3) -> int:
    """Side of the feature map after ``convs`` stride-2 3×3 convs with 1-pixel padding: ceil(n/2) each."""
    for _ in range(convs):
        patch = (patch + 1) // 2
    return patch


class DDcGANDiscriminator(nn.Module):
    """One of DDcGAN's two discriminators for ``patch``² inputs."""

    def __init__(self, patch: int = 84, channels=(16, 32, 64)):
        super().__init__()
        self.patch = int(patch)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        prev = 1
        for i, cout in enumerate(channels):
            self.convs.append(_conv3x3(prev, cout, stride=2, std=0.1))
            self.norms.append(_batch_statistics_norm(cout) if i > 0 else nn.Identity())
            prev = cout
        side = discriminator_size(self.patch, len(channels))
        self.dense = nn.Linear(prev * side * side, 1)
        nn.init.xavier_uniform_(self.dense.weight)  # tf.layers.dense's glorot-uniform default
        nn.init.zeros_(self.dense.bias)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-2:] != (self.patch, self.patch):
            raise ValueError(f"DDcGAN discriminator built for {self.patch}² patches, got {tuple(img.shape[-2:])}")
        x = img
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))
        return torch.tanh(self.dense(x.flatten(1))) / 2 + 0.5


def adversarial_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Generator side: ``-mean log(D(G) + 1e-8)``."""
    return -torch.log(d_fake + LOG_EPS).mean()


def bce_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """``-mean log(D(real) + 1e-8) - mean log(1 - D(fake) + 1e-8)``."""
    return -torch.log(d_real + LOG_EPS).mean() - torch.log(1.0 - d_fake + LOG_EPS).mean()


def ddcgan_content_loss(fused: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
    """``‖G - ir‖²_F / 16 + 1.2 ‖∇G - ∇vis‖₁``, each summed over pixels and averaged over the batch."""
    intensity = (fused - ir).pow(2).flatten(1).sum(1).mean()
    gradient = (eight_neighbour_laplacian(fused) - eight_neighbour_laplacian(vis)).abs().flatten(1).sum(1).mean()
    return intensity / 16.0 + 1.2 * gradient


def ddcgan_generator_loss(fused, vis, ir, d1_fake, d2_fake) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_G, adversarial part)`` with ``L_G = -log D1(G) - log D2(G) + 0.6 · content``."""
    adv = adversarial_loss(d1_fake) + adversarial_loss(d2_fake)
    return adv + 0.6 * ddcgan_content_loss(fused, vis, ir), adv


def _conv_params(cin: int, cout: int) -> int:
    return 9 * cin * cout + cout


def expected_generator_parameters(width: int = 48, dense_layers: int = 4, decoder=(240, 128, 64, 32)) -> int:
    """Trainable parameters of the reference generator, counted layer by layer (convs + BN γ, β)."""
    total = _conv_params(2, width) + 2 * width
    for k in range(dense_layers):
        total += _conv_params(width * (k + 1), width) + 2 * width
    prev = width * (dense_layers + 1)
    for cout in decoder:
        total += _conv_params(prev, cout) + 2 * cout
        prev = cout
    return total + _conv_params(prev, 1)


def expected_discriminator_parameters(patch: int = 84, channels=(16, 32, 64)) -> int:
    total, prev = 0, 1
    for i, cout in enumerate(channels):
        total += _conv_params(prev, cout) + (2 * cout if i > 0 else 0)
        prev = cout
    side = discriminator_size(patch, len(channels))
    return total + prev * side * side + 1


def batches_seen(optimizer: torch.optim.Optimizer, advance: bool = False) -> int:
    """The batch counter of a GAN schedule, kept in the optimiser's param group.

    Living in the optimiser state, it is saved and restored with training checkpoints, so a
    resumed run alternates and decays its learning rate exactly as an uninterrupted one.
    """
    group = optimizer.param_groups[0]
    count = int(group.get("batches_seen", 0))
    if advance:
        group["batches_seen"] = count + 1
    return count


class _GeneratorOnlyWeights:
    """Mixin: the shipped/cached weight files hold the generator ``net["g"]`` only.

    The discriminators are needed for training (and are checkpointed with it) but not for fusing,
    so the weight files stay small.
    """

    def weights_module(self) -> nn.Module:
        return nn.ModuleDict({"g": self.net["g"]})


@register_method("ddcgan", kind="gan",
                 reference="Ma, Xu, Jiang, Mei, Zhang, IEEE TIP 29 (2020): DDcGAN, same-resolution model; "
                           "unsupervised, trained by fusionbench on registered PAT/MRI pairs")
class DDcGAN(_GeneratorOnlyWeights, TrainableFusion):
    """DDcGAN fusion: PAT in the infrared slot (intensity, D2), MRI in the visible slot (gradient, D1).

    Training settings (constructor keywords): ``steps`` batches of ``batch`` aligned crops of
    ``patch``² (the paper: 84², batch 24, one epoch of TNO patches), ``lr`` (decayed by 0.9 per
    ``steps_per_epoch`` batches), ``max_inner`` the cap on the extra D or G iterations per batch
    (20 in the reference); the ±8 weight clipping follows the reference.
    """

    kind = "gan"
    weights_name = "ddcgan"
    #: The settings of the shipped weights (a CPU budget; the reference uses 84² crops, batch 24
    #: and max_inner 20). 1000 steps: on phantom 2.0 the validation curve still rose at 600.
    train_defaults = {"steps": 1000, "batch": 4, "patch": 48, "lr": 2e-4, "steps_per_epoch": 100, "max_inner": 4}
    natural_images = False  # unsupervised on the PAT/MRI pairs themselves
    decay, clip = 0.9, 8.0

    def __init__(self, *, steps_per_epoch: int | None = None, max_inner: int | None = None, **kw):
        super().__init__(**kw)
        extra = {"steps_per_epoch": steps_per_epoch, "max_inner": max_inner}
        self.train_settings.update({k: int(v) for k, v in extra.items() if v is not None})
        self.max_inner = int(self.train_settings["max_inner"])

    def build(self) -> nn.Module:
        patch = int(self.train_settings["patch"])
        return nn.ModuleDict({"g": DDcGANGenerator(), "d_vis": DDcGANDiscriminator(patch),
                              "d_ir": DDcGANDiscriminator(patch)})

    def fuse_pair(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        fused = self.net["g"](to_tensor(vis, self.torch_device), to_tensor(ir, self.torch_device))
        return fused[0, 0].float().cpu().numpy()

    def sample_batch(self, data: TrainingData, rng: np.random.Generator):
        pairs = data.sample_pairs(rng, int(self.train_settings["batch"]), int(self.train_settings["patch"]))
        slot = {"pat": 0, "mri": 1}
        return pairs[:, slot[self.roles["vis"]]][:, None], pairs[:, slot[self.roles["ir"]]][:, None]

    def make_optimizers(self):
        lr = float(self.train_settings["lr"])
        # TF1 RMSPropOptimizer (decay 0.9, no momentum) for G, plain SGD for the discriminators.
        return {"g": torch.optim.RMSprop(self.net["g"].parameters(), lr=lr, alpha=0.9, eps=1e-10),
                "d_vis": torch.optim.SGD(self.net["d_vis"].parameters(), lr=lr),
                "d_ir": torch.optim.SGD(self.net["d_ir"].parameters(), lr=lr)}

    def loss(self, batch):
        vis, ir = batch
        g = self.net["g"]
        fused = g(vis, ir)
        total, adv = ddcgan_generator_loss(fused, vis, ir, self.net["d_vis"](fused), self.net["d_ir"](fused))
        return {"loss": total, "adversarial": adv}

    def _d_losses(self, vis, ir):
        with torch.no_grad():
            fused = self.net["g"](vis, ir)
            return (float(bce_discriminator_loss(self.net["d_vis"](vis), self.net["d_vis"](fused))),
                    float(bce_discriminator_loss(self.net["d_ir"](ir), self.net["d_ir"](fused))))

    def _step_d(self, name, vis, ir):
        real = vis if name == "d_vis" else ir
        with torch.no_grad():
            fused = self.net["g"](vis, ir)
        loss = bce_discriminator_loss(self.net[name](real), self.net[name](fused))
        opt = self._optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        clip_weights_(self.net[name], self.clip)

    def _step_g(self, vis, ir, adversarial_only=False):
        terms = self.loss((vis, ir))
        opt = self._optimizers["g"]
        opt.zero_grad(set_to_none=True)
        terms["adversarial" if adversarial_only else "loss"].backward()
        opt.step()
        clip_weights_(self.net["g"], self.clip)

    def train_step(self, batch) -> dict[str, float]:
        """One batch of the reference schedule: even batches train D1 and D2, odd ones G."""
        if getattr(self, "_optimizers", None) is None:
            self.net.to(self.torch_device)
            self._optimizers = self.make_optimizers()
        self.net.train()
        vis, ir = self._batch_to_device(batch)
        index = batches_seen(self._optimizers["g"], advance=True)
        rate = float(self.train_settings["lr"]) * self.decay ** (index / int(self.train_settings["steps_per_epoch"]))
        for opt in self._optimizers.values():
            opt.param_groups[0]["lr"] = rate
        if index % 2 == 0:
            self._step_d("d_vis", vis, ir)
            self._step_d("d_ir", vis, ir)
            d1, d2 = self._d_losses(vis, ir)
            inner = [1, 1]
            while d1 > 1.7 and inner[0] < self.max_inner:
                self._step_d("d_vis", vis, ir)
                d1 = self._d_losses(vis, ir)[0]
                inner[0] += 1
            while d2 > 1.7 and inner[1] < self.max_inner:
                self._step_d("d_ir", vis, ir)
                d2 = self._d_losses(vis, ir)[1]
                inner[1] += 1
            extra = max(inner)
        else:
            self._step_g(vis, ir)
            extra = 1
            d1, d2 = self._d_losses(vis, ir)
            while (d1 < 1.4 or d2 < 1.4) and extra < self.max_inner:
                self._step_g(vis, ir, adversarial_only=True)
                d1, d2 = self._d_losses(vis, ir)
                extra += 1
            with torch.no_grad():
                g_loss = float(self.loss((vis, ir))["loss"])
            while g_loss > 200 and extra < self.max_inner:
                self._step_g(vis, ir)
                with torch.no_grad():
                    g_loss = float(self.loss((vis, ir))["loss"])
                extra += 1
        with torch.no_grad():
            terms = self.loss((vis, ir))
            content = float(ddcgan_content_loss(self.net["g"](vis, ir), vis, ir))
        return {"loss": float(terms["loss"]), "adversarial": float(terms["adversarial"]), "content": content,
                "d_vis": d1, "d_ir": d2, "iterations": float(extra)}
