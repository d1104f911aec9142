"""P2M: PAT -> pseudo-MRI cross-modal style transfer (Zhong et al. 2024, §2.2; spec §2).

A CycleGAN (Zhu et al., ICCV 2017) with two ResNet generators and two 70×70 PatchGAN
discriminators, trained with the perceptual-style-transfer cycle loss of CPSTN (Xu et al., IJCAI
2022) in :mod:`pamrfuse.losses`. Names: ``g_pm`` PAT->MRI (the "P2M" generator), ``g_mp``
MRI->PAT, ``d_m`` judges MRI, ``d_p`` judges PAT. Module boundaries take and return [0, 1]
images; the generators work in [-1, 1] internally and end in tanh (CycleGAN convention).

Architecture exactly as the released code (spec §2.1-2.2): the paper's "similar to U-Net" is a
ResNet-9 encoder/decoder without skips (spec §7 item 2). Instance norm without affine parameters,
so every conv keeps its bias; weights N(0, 0.02), biases 0.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from fusionbench.data.io import as_image

__all__ = ["ResnetGenerator", "PatchDiscriminator", "P2M", "ImagePool", "init_cyclegan", "translate"]


def init_cyclegan(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """CycleGAN's ``init_type="normal"``: conv weights N(0, gain), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def _norm(ch: int) -> nn.Module:
    return nn.InstanceNorm2d(ch, affine=False, track_running_stats=False)


class _ResnetBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(ch), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(ch))

    def forward(self, x):
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN ``resnet_9blocks`` generator; [-1, 1] in and out (spec §2.1).

    ``ngf=64, n_blocks=9`` has 11,365,633 parameters. Input height and width must be multiples
    of 4 (two stride-2 stages).
    """

    def __init__(self, ngf: int = 64, n_blocks: int = 9, channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, ngf, 7), _norm(ngf), nn.ReLU(True)]
        for mult in (1, 2):
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1), _norm(ngf * mult * 2),
                       nn.ReLU(True)]
        layers += [_ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1),
                       _norm(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_cyclegan(self)

    def forward(self, x):
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """70×70 PatchGAN (``n_layers=3``): a patch map of raw scores, no sigmoid (LSGAN).

    ``ndf=64`` has 2,762,689 parameters.
    """

    def __init__(self, ndf: int = 64, n_layers: int = 3, channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1), _norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.model = nn.Sequential(*layers)
        init_cyclegan(self)

    def forward(self, x):
        return self.model(x)


def to_signed(x: torch.Tensor) -> torch.Tensor:
    return 2.0 * x - 1.0


def to_unit(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x + 1.0)


class P2M(nn.Module):
    """The two generators and two discriminators; ``forward(pat)`` is the pseudo-MRI in [0, 1]."""

    def __init__(self, ngf: int = 64, n_blocks: int = 9, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        self.g_pm = ResnetGenerator(ngf, n_blocks)
        self.g_mp = ResnetGenerator(ngf, n_blocks)
        self.d_m = PatchDiscriminator(ndf, n_layers)
        self.d_p = PatchDiscriminator(ndf, n_layers)

    def forward(self, pat01: torch.Tensor) -> torch.Tensor:
        return to_unit(self.g_pm(to_signed(pat01)))

    def generators(self) -> list[nn.Parameter]:
        return [*self.g_pm.parameters(), *self.g_mp.parameters()]

    def discriminators(self) -> list[nn.Parameter]:
        return [*self.d_m.parameters(), *self.d_p.parameters()]


class ImagePool:
    """CycleGAN's history buffer of generated images (Shrivastava et al., CVPR 2017).

    With probability 1/2 a query image is swapped for a stored one once the pool is full, so the
    discriminator also sees older fakes. ``size=0`` disables the pool. Seeded for repeatability.
    """

    def __init__(self, size: int = 50, seed: int = 0):
        self.size, self.images = size, []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif self.rng.random() > 0.5:
                i = self.rng.randrange(self.size)
                out.append(self.images[i].clone())
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        return {"images": [t.cpu() for t in self.images], "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.images = list(state["images"])
        self.rng.setstate(state["rng"])


def _pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


@torch.no_grad()
def translate(pat, generator: nn.Module | P2M, *, device: str | torch.device = "cpu") -> np.ndarray:
    """PAT image(s) -> pseudo-MRI in [0, 1] with the P2M generator ``g_pm``.

    Parameters
    ----------
    pat : array_like, shape (H, W) or sequence of such
        PAT images (any numeric range; converted with :func:`fusionbench.data.io.as_image`).
    generator : P2M or ResnetGenerator
        A trained model (the shipped one: ``create_method("pamrfuse+").net.p2m``).

    Returns
    -------
    numpy.ndarray
        float32 pseudo-MRI of the input's shape (a stack for a sequence input).
    """
    if isinstance(generator, P2M):
        generator = generator.g_pm
    single = isinstance(pat, np.ndarray) and pat.ndim == 2
    images = [as_image(pat, "pat")] if single else [as_image(p, f"pat[{i}]") for i, p in enumerate(pat)]
    was_training = generator.training
    generator.eval().to(device)
    out = []
    for img in images:
        x, (h, w) = _pad_to(torch.from_numpy(img)[None, None].to(device), 4)
        y = to_unit(generator(to_signed(x)))[0, 0, :h, :w]
        out.append(y.clamp(0, 1).cpu().numpy().astype(np.float32))
    generator.train(was_training)
    return out[0] if single else np.stack(out)
