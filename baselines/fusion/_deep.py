"""Shared base of the learned fusion baselines: device, roles, shipped weights, cached training.

Every deep baseline of fusionbench (CNN, VGGML, DenseFuse, MEF-GAN, DDcGAN, U2Fusion) is a plain
torch re-implementation of the paper's architecture and loss, trained by our own code, because
none of the original weights can be downloaded (baselines.md §4). This module holds what they
share, so that a method module only states its network, its loss and its fusion rule:

:class:`TorchFusion`
    Input checks (:func:`fusionbench.data.io.as_image`), the IR/visible role mapping
    (PAT -> ``ir``, MRI -> ``vis`` by default), the device (``"auto"``: CUDA when present) and the
    float32 [0, 1] output. Subclasses implement :meth:`TorchFusion.fuse_pair`.
:class:`TrainableFusion`
    Adds shipped weights (``baselines/weights/NAME/weights.pt`` + ``provenance.json``, float32 as
    validated), a seeded, checkpointed training loop, and :meth:`TrainableFusion.fit` cached by the
    content hash of the training cases and the training configuration. Subclasses implement
    :meth:`~TrainableFusion.build`, :meth:`~TrainableFusion.sample_batch` and
    :meth:`~TrainableFusion.loss` (or :meth:`~TrainableFusion.train_step` for several optimisers,
    as GANs need).
:class:`TrainingData`
    The offline training set: the cases' PAT and MRI images plus the images bundled with
    scikit-image (:data:`NATURAL_IMAGES`; never the ones ``skimage.data`` fetches with pooch),
    sampled as seeded random patches (single images or aligned PAT/MRI pairs) with flips and
    quarter turns.

The weights a fused image came from are recorded in ``config()["weights"]`` (``retrained-toolkit
(...)``, ``user-file (...)`` or ``random``), which the results tables show.
"""
from __future__ import annotations

import functools
import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from fusionbench.data.io import as_image, check_same_shape
from fusionbench.fitting import (BudgetExhausted, FitControl, TrainingClock, save_curves, validation_metric,
                                 validation_record, validation_scores)
from fusionbench.methods import FusionMethod, Trainable
from fusionbench.nn.layers import resolve_device
from fusionbench.nn.training import load_state, parameter_count, save_state, seed_everything
from fusionbench.weights import load_into, shipped_state, weights_note

from ..classic import DEFAULT_ROLES

__all__ = [
    "WEIGHTS_DIR", "NATURAL_IMAGES", "natural_images", "TrainingData", "TorchFusion", "TrainableFusion",
]

#: Where shipped weights live (``NAME.pt`` and its ``NAME.json`` provenance).
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

#: scikit-image images that are installed with the package (no pooch download), used as the
#: natural-image part of the offline training set.
NATURAL_IMAGES = ("camera", "astronaut", "brick", "grass", "gravel", "moon", "coins", "text", "cell",
                  "clock", "horse", "shepp_logan_phantom", "retina")


@functools.lru_cache(maxsize=1)
def _natural_images() -> tuple[np.ndarray, ...]:
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.util import img_as_float32

    out = []
    for name in NATURAL_IMAGES:
        img = getattr(skimage.data, name)()
        img = rgb2gray(img) if img.ndim == 3 else img
        out.append(np.ascontiguousarray(img_as_float32(img), dtype=np.float32))
    return tuple(out)


def natural_images() -> list[np.ndarray]:
    """The :data:`NATURAL_IMAGES` as gray float32 arrays in [0, 1] (RGB ones via ``rgb2gray``)."""
    return list(_natural_images())


# --------------------------------------------------------------------------------------------
# Training data
# --------------------------------------------------------------------------------------------

def _augment(patch: np.ndarray, k: int, flip: bool) -> np.ndarray:
    patch = np.rot90(patch, k, axes=(-2, -1))
    return patch[..., ::-1] if flip else patch


class TrainingData:
    """Seeded random patches from the offline training set.

    Parameters
    ----------
    cases : sequence of Case
        Training cases (the train split); their PAT and MRI images are used as single images and
        as aligned pairs.
    natural : bool
        Add the :data:`NATURAL_IMAGES` to the single-image pool (the recipe for autoencoders and
        blur classifiers, which the papers train on natural images).
    """

    def __init__(self, cases: Sequence[Any], natural: bool = True):
        self.pairs = [(as_image(c.pat, "pat"), as_image(c.mri, "mri")) for c in cases]
        self.natural = bool(natural)
        self.singles = [img for pair in self.pairs for img in pair]
        if natural:
            self.singles += natural_images()
        if not self.singles:
            raise ValueError("training data: no cases and no natural images")

    def describe(self) -> str:
        """One line for the provenance record."""
        nat = f" + skimage.data ({', '.join(NATURAL_IMAGES)})" if self.natural else ""
        return f"{len(self.pairs)} PAT/MRI training cases{nat}"

    @staticmethod
    def _crop(stack: np.ndarray, patch: int, rng: np.random.Generator) -> np.ndarray:
        h, w = stack.shape[-2:]
        if h < patch or w < patch:  # reflect small images up to the patch size
            pad = ((0, 0),) * (stack.ndim - 2) + ((0, max(0, patch - h)), (0, max(0, patch - w)))
            stack = np.pad(stack, pad, mode="reflect" if min(h, w) > 1 else "edge")
            h, w = stack.shape[-2:]
        r, c = int(rng.integers(h - patch + 1)), int(rng.integers(w - patch + 1))
        return _augment(stack[..., r:r + patch, c:c + patch], int(rng.integers(4)), bool(rng.integers(2)))

    def sample_singles(self, rng: np.random.Generator, batch: int, patch: int) -> torch.Tensor:
        """(batch, 1, patch, patch) crops of images drawn uniformly from the single-image pool."""
        idx = rng.integers(len(self.singles), size=batch)
        crops = [self._crop(self.singles[i], patch, rng) for i in idx]
        return torch.from_numpy(np.ascontiguousarray(np.stack(crops)[:, None]))

    def sample_pairs(self, rng: np.random.Generator, batch: int, patch: int) -> torch.Tensor:
        """(batch, 2, patch, patch) aligned crops; channel 0 is PAT, channel 1 MRI."""
        if not self.pairs:
            raise ValueError("training data: pairs requested but there are no training cases")
        idx = rng.integers(len(self.pairs), size=batch)
        crops = [self._crop(np.stack(self.pairs[i]), patch, rng) for i in idx]
        return torch.from_numpy(np.ascontiguousarray(np.stack(crops)))


# --------------------------------------------------------------------------------------------
# Base classes
# --------------------------------------------------------------------------------------------

class TorchFusion(FusionMethod):
    """A fusion method computed by torch: input checks, roles, device and output range.

    Parameters
    ----------
    roles : dict, optional
        ``{"ir": "pat", "vis": "mri"}`` (default) puts PAT in the infrared/functional slot.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    """

    kind = "cnn"

    def __init__(self, *, roles: dict[str, str] | None = None, device: str = "auto"):
        roles = dict(DEFAULT_ROLES if roles is None else roles)
        if sorted(roles) != ["ir", "vis"] or sorted(roles.values()) != ["mri", "pat"]:
            raise ValueError(f"{type(self).__name__}: roles must map 'ir' and 'vis' to 'pat' and 'mri', "
                             f"got {roles}")
        self.roles = roles
        self.device = str(resolve_device(device))

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def to(self, device: str) -> "TorchFusion":
        """Move to ``device`` (``"auto"`` allowed) for the following fusions and training."""
        self.device = str(resolve_device(device))
        return self

    def modules(self) -> list[nn.Module]:
        """The torch modules used at inference (moved to the device before fusing)."""
        return []

    def describe_weights(self) -> str:
        """What the fused image's numbers come from (the results table's "weights" column)."""
        return "none"

    def config(self) -> dict[str, Any]:
        return {**dict(getattr(self, "_config", {})), "roles": dict(self.roles),
                "weights": self.describe_weights()}

    def fuse(self, pat, mri) -> np.ndarray:
        pat = as_image(pat, "pat")
        mri = as_image(mri, "mri")
        check_same_shape(pat=pat, mri=mri)
        by_role = {"pat": pat, "mri": mri}
        for module in self.modules():
            module.to(self.torch_device).eval()
        with torch.inference_mode():
            fused = self.fuse_pair(by_role[self.roles["ir"]], by_role[self.roles["vis"]])
        fused = np.asarray(fused, dtype=np.float32)
        if fused.shape != pat.shape or not np.isfinite(fused).all():
            raise RuntimeError(f"{self.name}: fused image has shape {fused.shape} or non-finite values")
        return np.clip(fused, 0.0, 1.0)

    def fuse_pair(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """Fuse two checked float32 (H, W) images in [0, 1]; runs under ``torch.inference_mode``."""
        raise NotImplementedError


class TrainableFusion(Trainable, TorchFusion):
    """A :class:`TorchFusion` with a network trained by our code, following the trainable-weights
    protocol (:mod:`fusionbench.weights`: the core keys, caches and ships the weights).

    Subclasses set :attr:`weights_name` and :attr:`train_defaults` and implement :meth:`build`,
    :meth:`sample_batch` and :meth:`loss`; methods with several optimisers override
    :meth:`make_optimizers` and :meth:`train_step`.

    Parameters
    ----------
    weights : {"shipped", "random"} or path
        ``"shipped"``: the folder ``baselines/weights/<weights_name>/`` when its provenance names
        the current :meth:`train_config`, else the random initialisation (with a warning);
        ``"random"``: the seeded initialisation; a path: a weights folder (``weights.pt`` +
        ``provenance.json``) written by ``fusionbench fit``, loaded whatever its settings.
    seed : int
        Seeds the initialisation, the patch sampler and training.
    steps, batch, patch, lr : optional
        Training settings; ``None`` keeps :attr:`train_defaults`.
    roles, device
        As :class:`TorchFusion`.
    """

    trainable = True
    weights_name = ""
    #: Subclasses: {"steps", "batch", "patch", "lr", ...}; every key is a constructor setting.
    train_defaults: dict[str, Any] = {"steps": 1000, "batch": 16, "patch": 64, "lr": 1e-4}
    #: Bump when the architecture or loss changes, so cached fits and shipped weights are not reused.
    version = "1"
    #: Whether the natural images join the training set (paired-data methods may say no).
    natural_images = True
    #: Steps between checkpoints (where an interrupted or budget-stopped fit continues from).
    checkpoint_every = 50

    def __init__(self, *, weights: str | Path | None = "shipped", seed: int = 0, steps: int | None = None,
                 batch: int | None = None, patch: int | None = None, lr: float | None = None,
                 roles: dict[str, str] | None = None, device: str = "auto"):
        super().__init__(roles=roles, device=device)
        given = {"steps": steps, "batch": batch, "patch": patch, "lr": lr}
        self.train_settings = {**self.train_defaults, **{k: v for k, v in given.items() if v is not None}}
        for key in ("steps", "batch", "patch"):
            if int(self.train_settings[key]) < 1:
                raise ValueError(f"{type(self).__name__}: {key} must be >= 1, got {self.train_settings[key]}")
        self.seed = int(seed)
        seed_everything(self.seed)
        self.net = self.build()
        self.net.eval()
        self.provenance: dict[str, Any] = {}
        if weights in (None, "random", "none"):
            pass
        elif weights == "shipped":
            if shipped_state(self) in ("match", "other-data"):
                load_into(self, self.shipped_weights())
            else:
                warnings.warn(f"{type(self).__name__}: no shipped weights for its current train_config at "
                              f"{self.shipped_weights()}; using random weights (`fusionbench fit {self.name}`)",
                              RuntimeWarning, stacklevel=2)
        else:
            load_into(self, weights, check_config=False)
            self.provenance["user_file"] = str(weights)

    # ---- to implement -----------------------------------------------------------------------
    def build(self) -> nn.Module:
        """The network (an ``nn.Module``; a ``ModuleDict`` for several nets) at its initialisation."""
        raise NotImplementedError

    def sample_batch(self, data: TrainingData, rng: np.random.Generator) -> Any:
        """One training batch (default: single-image patches of the configured size)."""
        return data.sample_singles(rng, int(self.train_settings["batch"]), int(self.train_settings["patch"]))

    def loss(self, batch: Any) -> torch.Tensor | dict[str, torch.Tensor]:
        """The paper's training loss on ``batch``; a dict must hold the total under ``"loss"``."""
        raise NotImplementedError

    # ---- training ---------------------------------------------------------------------------
    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Adam on all parameters at ``lr`` (the papers' default); override for SGD or GANs."""
        return {"net": torch.optim.Adam(self.net.parameters(), lr=float(self.train_settings["lr"]))}

    def _batch_to_device(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(self.torch_device)
        if isinstance(batch, (tuple, list)):
            return type(batch)(self._batch_to_device(b) for b in batch)
        return batch

    def train_step(self, batch: Any) -> dict[str, float]:
        """One optimisation step on ``batch``; returns the loss terms as floats (``"loss"`` = total).

        Creates the optimisers on first use (kept on the instance, dropped when pickled).
        """
        if getattr(self, "_optimizers", None) is None:
            self.net.to(self.torch_device)
            self._optimizers = self.make_optimizers()
        self.net.train()
        batch = self._batch_to_device(batch)
        out = self.loss(batch)
        terms = out if isinstance(out, dict) else {"loss": out}
        for opt in self._optimizers.values():
            opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        for opt in self._optimizers.values():
            opt.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    # Worker processes receive methods by pickling; parametrized modules (MEF-GAN's spectral
    # norm) cannot be pickled, so the network travels as its state dict and is rebuilt.
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_optimizers"] = None
        state["net"] = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        net_state = state.pop("net")
        self.__dict__.update(state)
        self.net = self.build()
        self.net.load_state_dict(net_state)
        self.net.eval()

    def train(self, data: TrainingData, *, steps: int | None = None, log: Callable[[str], None] | None = None,
              checkpoint: str | Path | None = None, checkpoint_every: int | None = None,
              log_every: int = 25, control: FitControl | None = None) -> list[float]:
        """Run the seeded training loop; returns the total loss per step.

        With ``checkpoint`` the network, optimisers, sampler state, loss history and validation
        points are saved every ``checkpoint_every`` steps, and a later call with the same path
        resumes where it stopped (same batches, same result as an uninterrupted run). With
        ``control`` the held-out cases are scored every ``control.every(steps)`` steps
        (:attr:`val_history`, drawn with the loss in ``curves.png`` beside the checkpoint), and
        :class:`~fusionbench.fitting.BudgetExhausted` is raised at the first checkpoint after the
        time budget is spent.
        """
        steps = int(self.train_settings["steps"] if steps is None else steps)
        checkpoint_every = int(checkpoint_every or self.checkpoint_every)
        seed_everything(self.seed)
        rng = np.random.default_rng(self.seed)
        self.net.to(self.torch_device)
        self._optimizers = self.make_optimizers()
        history: list[float] = []
        self.val_history: list[tuple[int, float]] = []
        val_cases = control.cases() if control is not None else []
        val_every = control.every(steps) if control is not None else 0
        metric, _ = validation_metric(self)
        ckpt = Path(checkpoint) if checkpoint is not None else None
        saved = None
        if ckpt is not None and ckpt.is_file():
            saved = torch.load(ckpt, map_location=self.torch_device, weights_only=True)
            self.net.load_state_dict(saved["net"])
            for name, opt in self._optimizers.items():
                opt.load_state_dict(saved["opt"][name])
            rng.bit_generator.state = json.loads(saved["rng"])
            torch.set_rng_state(saved["torch_rng"])
            history = list(saved["history"])
            self.val_history = [tuple(p) for p in json.loads(saved.get("val_history", "[]"))]
        self.clock = TrainingClock.resume(saved)
        start, t0 = len(history), time.perf_counter()
        for step in range(start, steps):
            terms = self.train_step(self.sample_batch(data, rng))
            history.append(terms["loss"])
            done = step + 1
            if log is not None and (done % log_every == 0 or done == steps):
                rate = (time.perf_counter() - t0) / (done - start)
                parts = " ".join(f"{k}={v:.4g}" for k, v in terms.items())
                log(f"{self.name or type(self).__name__} step {done}/{steps} {parts} ({rate:.2f} s/step)")
            if val_cases and (done % val_every == 0 or done == steps):
                self.net.eval()
                # The scoring must not move the training's random streams (resumes stay identical).
                torch_rng = torch.get_rng_state()
                restore = self.prepare_validation(data)
                score = validation_scores(self, val_cases)[metric]
                if restore is not None:
                    restore()
                torch.set_rng_state(torch_rng)
                self.val_history.append((done, score))
                if log is not None:
                    log(f"{self.name or type(self).__name__} step {done}/{steps} validation {metric}={score:.4f}")
            at_checkpoint = done % checkpoint_every == 0 or done == steps
            if ckpt is not None and at_checkpoint:
                blob = self.clock.stamp({"net": self.net.state_dict(),
                                         "opt": {n: o.state_dict() for n, o in self._optimizers.items()},
                                         "rng": json.dumps(rng.bit_generator.state),
                                         "torch_rng": torch.get_rng_state(), "history": history,
                                         "val_history": json.dumps(self.val_history)})
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                torch.save(blob, ckpt.with_suffix(".tmp"))
                ckpt.with_suffix(".tmp").replace(ckpt)
                save_curves(ckpt.parent / "curves.png", history, self.val_history, metric=metric,
                            title=f"{self.name or type(self).__name__}: {done}/{steps} steps", total_steps=steps)
            if control is not None and at_checkpoint and done < steps and control.spent():
                self.net.eval()
                self._optimizers = None
                raise BudgetExhausted(done, steps, ckpt)
        self.net.eval()
        self._optimizers = None
        return history

    def prepare_validation(self, data: TrainingData) -> Callable[[], None] | None:
        """Bring the network into its inference state before a validation point; returns what
        undoes it (``None``: nothing to undo). MEF-GAN recalibrates its batch-norm statistics."""
        return None

    def train_config(self) -> dict[str, Any]:
        """Everything that determines the trained weights besides the data (the protocol's key)."""
        return {**self.train_settings, "seed": self.seed, "version": self.version,
                "natural_images": self.natural_images}

    def training_metrics(self) -> dict[str, Any]:
        """Method-specific entries for the provenance's metrics (e.g. U2Fusion's information weights)."""
        return {}

    def fit(self, cases: Sequence[Any], workdir, control: FitControl | None = None) -> dict[str, Any]:
        """Train from the current weights on ``cases`` + the natural images; the checkpoint in
        ``workdir`` makes an interrupted fit resume. Returns the training metrics (with
        ``control``'s held-out cases, the validation curve and its tail trend)."""
        data = TrainingData(cases, natural=self.natural_images)
        history = self.train(data, checkpoint=Path(workdir) / "train.ckpt", control=control)
        hist = np.asarray(history, dtype=np.float64)
        deciles = [float(c.mean()) for c in np.array_split(hist, min(10, len(hist)))] if len(hist) else []
        metrics = {"training_set": data.describe(), "steps": len(hist),
                   "loss_first": float(hist[0]) if len(hist) else None,
                   "loss_last": float(hist[-max(1, len(hist) // 20):].mean()) if len(hist) else None,
                   "loss_curve_deciles": deciles, "parameters": parameter_count(self.net),
                   "train_seconds": self.clock.total(), **self.training_metrics()}
        if self.val_history:
            metrics["validation"] = validation_record(self, self.val_history, len(hist), len(control.cases()))
        return metrics

    # ---- weights (fusionbench.weights protocol) ---------------------------------------------
    def weights_module(self) -> nn.Module:
        """The module whose state is the weight file (GANs: the generator only)."""
        return self.net

    def shipped_weights(self) -> Path:
        return WEIGHTS_DIR / self.weights_name

    def save_weights(self, folder, *, half: bool = False) -> None:
        """``folder/weights.pt``: the state dict (float16 with ``half``)."""
        state = {k: (v.half() if half and v.is_floating_point() else v)
                 for k, v in self.weights_module().state_dict().items()}
        save_state(Path(folder) / "weights.pt", state)

    def load_weights(self, folder) -> None:
        path = Path(folder) / "weights.pt"
        try:
            self.weights_module().load_state_dict({k: v.float() for k, v in load_state(path).items()})
        except RuntimeError as exc:
            raise ValueError(f"{path}: weights do not fit {type(self).__name__}: {exc}") from None
        self.net.float().eval()

    def modules(self) -> list[nn.Module]:
        return [self.net]

    def describe_weights(self) -> str:
        if not self.provenance:
            return f"random (seed {self.seed})"
        if "user_file" in self.provenance:
            return f"user-file ({Path(self.provenance['user_file']).name})"
        return weights_note(self.provenance)

    def config(self) -> dict[str, Any]:
        return {**super().config(), **self.train_settings, "seed": self.seed}
