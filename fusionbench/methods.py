"""The plugin interface and the method registry (DESIGN §5).

A method is registered by decorating a factory (a class or a function returning an instance)::

    @register_method("gtf", kind="traditional", reference="Ma et al., Inf. Fusion 2016")
    class GTF(FusionMethod):
        ...

The CLI and the harness only ever talk to :func:`list_methods`, :func:`resolve_methods` and
:func:`create_method`. Packages, ours included, make their methods known through the
``fusionbench.methods`` entry-point group: each entry point names a module (or a callable) that is
imported (or called) once, which runs the ``@register_method`` decorators.
"""
from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Callable, Iterable, Sequence

import numpy as np

__all__ = [
    "FusionMethod", "RegistrationMethod", "Trainable", "MethodInfo", "register_method", "list_methods",
    "create_method", "get_method_info", "resolve_methods", "load_plugins", "import_method_modules",
    "default_registration", "ENTRY_POINT_GROUP", "KINDS", "IDENTITY",
]

ENTRY_POINT_GROUP = "fusionbench.methods"
#: The registration every run can fall back to: no registration at all.
IDENTITY = "identity"
#: The selection that names no method (``--methods none``).
NO_METHODS = "none"
#: Fusion kinds (DESIGN §5) plus the role "registration" for registration-only methods.
KINDS = ("reference", "traditional", "cnn", "gan", "transformer", "registration")
#: Selection aliases resolved by the registry (``--methods classic``).
ALIASES: dict[str, Callable[["MethodInfo"], bool]] = {
    # Registration methods too: a run scores them as the registration table's rows.
    "all": lambda m: m.role in ("fusion", "joint", "registration") and m.in_all,
    "classic": lambda m: m.role == "fusion" and m.kind in ("reference", "traditional"),
    "deep": lambda m: m.role in ("fusion", "joint") and m.kind in ("cnn", "gan", "transformer") and m.in_all,
    "registration": lambda m: m.role in ("registration", "joint"),
}


class FusionMethod:
    """One fused image from an aligned PAT/MRI pair.

    Subclasses set the class attributes below and implement :meth:`fuse`; trainable methods
    also implement :meth:`fit`. Images are float32 (H, W) in [0, 1] (DESIGN §3); PAT takes the
    infrared/functional slot, MRI the visible/anatomical slot.
    """

    name: str = ""
    kind: str = "traditional"
    reference: str = ""
    needs_alignment: bool = True
    trainable: bool = False
    device: str = "cpu"

    def fit(self, cases: Sequence[Any], workdir) -> None:  # noqa: D401 - interface
        """Train on ``cases`` (the train split); no-op for untrained methods."""

    def fuse(self, pat: np.ndarray, mri: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The settings that change the output (used for cache keys and recorded in results)."""
        return dict(getattr(self, "_config", {}))


class RegistrationMethod:
    """Warps the moving image (PAT) into the fixed image's (MRI's) frame."""

    name: str = ""
    kind: str = "registration"
    reference: str = ""
    trainable: bool = False
    device: str = "cpu"

    def fit(self, cases: Sequence[Any], workdir) -> None:
        """Train on ``cases``; no-op for untrained methods."""

    def register(self, moving: np.ndarray, fixed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(warped, flow)`` with ``warped = warp(moving, flow)`` (fusionbench.warp)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return dict(getattr(self, "_config", {}))


class Trainable:
    """The trainable-weights protocol (:mod:`fusionbench.weights`), mixed into a method class.

    A trainable method states what makes its weights (:meth:`train_config`), how to train them
    (:meth:`fit`) and how to write and read them (:meth:`save_weights` / :meth:`load_weights`);
    the core keys, caches, ships and records them. ``provenance`` holds the record of the
    weights loaded now (empty for untrained ones).
    """

    trainable = True
    provenance: dict[str, Any] = {}

    def train_config(self) -> dict[str, Any]:
        """Everything that changes the trained weights besides the data, ``"version"`` included."""
        raise NotImplementedError

    def fit(self, cases: Sequence[Any], workdir) -> dict[str, Any]:
        """Train on ``cases``; checkpoints go to ``workdir``. Returns the metrics at training time."""
        raise NotImplementedError

    def save_weights(self, folder) -> None:
        raise NotImplementedError

    def load_weights(self, folder) -> None:
        raise NotImplementedError

    def shipped_weights(self):
        """The folder of the weights shipped with the plugin, or ``None``."""
        return None

    def weights_note(self) -> str:
        """What the outputs' numbers come from, for the tables' ``weights`` column."""
        from .weights import weights_note

        return weights_note(self.provenance)


@dataclass(frozen=True)
class MethodInfo:
    name: str
    factory: Callable[..., Any]
    kind: str
    role: str  # "fusion" | "registration" | "joint"
    reference: str = ""
    needs_alignment: bool = True
    trainable: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    in_all: bool = True  # False for variants (ablations) that only run when named
    default_registration: bool = False  # the protocol's registration when a run names none


_REGISTRY: dict[str, MethodInfo] = {}
_PLUGINS_LOADED = False


def _role_of(factory: Callable[..., Any]) -> str:
    if isinstance(factory, type):
        is_fusion = issubclass(factory, FusionMethod)
        is_reg = issubclass(factory, RegistrationMethod)
        if is_fusion and is_reg:
            return "joint"
        if is_reg:
            return "registration"
    return "fusion"


def register_method(name: str, *, kind: str | None = None, reference: str | None = None,
                    role: str | None = None, needs_alignment: bool | None = None,
                    trainable: bool | None = None, in_all: bool = True, default_registration: bool = False,
                    **defaults: Any):
    """Class/function decorator registering a method factory under ``name``.

    Attributes not given are read from the class (``kind``, ``reference``, ``needs_alignment``,
    ``trainable``). ``in_all=False`` keeps a variant (an ablation) out of the ``all`` and ``deep``
    selections. ``default_registration=True`` makes a registration method the one runs use when
    they name none (the benchmark protocol of the plugin that registers it). ``defaults`` are keyword arguments passed to the factory by :func:`create_method`
    unless overridden.
    """
    key = name.lower()

    def deco(factory):
        k = kind or getattr(factory, "kind", "traditional")
        if k not in KINDS:
            raise ValueError(f"method {name!r}: unknown kind {k!r} (expected one of {KINDS})")
        info = MethodInfo(
            name=key, factory=factory, kind=k, role=role or _role_of(factory),
            reference=reference if reference is not None else getattr(factory, "reference", ""),
            needs_alignment=needs_alignment if needs_alignment is not None
            else getattr(factory, "needs_alignment", True),
            trainable=trainable if trainable is not None else getattr(factory, "trainable", False),
            defaults=dict(defaults), source=getattr(factory, "__module__", ""), in_all=in_all,
            default_registration=default_registration,
        )
        old = _REGISTRY.get(key)
        if old is not None and (old.source, getattr(old.factory, "__qualname__", "")) != (
                info.source, getattr(factory, "__qualname__", "")):
            raise ValueError(f"method {name!r} is already registered by {old.source}")
        _REGISTRY[key] = info
        if isinstance(factory, type):
            factory.name = key
        return factory

    return deco


def import_method_modules(package: str, path: Iterable[str]) -> None:
    """Import every public module of a method package, so their ``@register_method`` run.

    Call it from the package's ``__init__`` as ``import_method_modules(__name__, __path__)``. A module
    that fails to import is reported with a warning and skipped: one broken method never hides the
    others from the registry.
    """
    import pkgutil

    for mod in pkgutil.iter_modules(path):
        if not mod.name.startswith("_"):
            try:
                import_module(f"{package}.{mod.name}")
            except Exception as exc:  # noqa: BLE001 - isolate broken method modules
                warnings.warn(f"fusionbench: method module {package}.{mod.name} failed to import: "
                              f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)


def load_plugins(force: bool = False) -> None:
    """Import every entry point of the ``fusionbench.methods`` group (once)."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED and not force:
        return
    _PLUGINS_LOADED = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type):
                obj()
        except Exception as exc:  # a broken plugin must not take the benchmark down
            warnings.warn(f"fusionbench: plugin {ep.name!r} ({ep.value}) failed to load: "
                          f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)


def list_methods(kind: str | None = None, role: str | None = None) -> list[str]:
    """Sorted names of registered methods, optionally filtered by kind or role."""
    load_plugins()
    return sorted(n for n, m in _REGISTRY.items()
                  if (kind is None or m.kind == kind) and (role is None or m.role == role))


def get_method_info(name: str) -> MethodInfo:
    load_plugins()
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def create_method(name: str, **cfg: Any):
    """Instantiate a registered method with its defaults updated by ``cfg``."""
    info = get_method_info(name)
    kwargs = {**info.defaults, **cfg}
    obj = info.factory(**kwargs)
    obj._config = kwargs
    if not getattr(obj, "name", ""):
        obj.name = info.name
    return obj


def default_registration() -> str:
    """The registration a run uses when it names none: the one a plugin registered with
    ``default_registration=True``, else :data:`IDENTITY`."""
    load_plugins()
    chosen = sorted(n for n, m in _REGISTRY.items() if m.default_registration)
    if len(chosen) > 1:
        raise ValueError(f"several plugins declare the default registration: {', '.join(chosen)}")
    return chosen[0] if chosen else IDENTITY


def resolve_methods(selection: str | Iterable[str]) -> list[str]:
    """Resolve ``"all"``, ``"classic"``, ``"deep"``, kinds, names and shell patterns to names.

    Order follows the selection; duplicates are dropped. Unknown names raise ``KeyError``.
    ``"none"`` alone selects no method (an empty list: a run of the task evaluations only).
    """
    load_plugins()
    items = [s.strip().lower() for s in (selection.split(",") if isinstance(selection, str) else selection)]
    if NO_METHODS in items:
        if [i for i in items if i] != [NO_METHODS]:
            raise KeyError(f"{NO_METHODS!r} selects no method and cannot be combined with others: "
                           f"{', '.join(i for i in items if i)}")
        return []
    out: list[str] = []
    for item in filter(None, items):
        if item in ALIASES:
            found = [n for n, m in sorted(_REGISTRY.items()) if ALIASES[item](m)]
        elif item in KINDS:
            found = [n for n, m in sorted(_REGISTRY.items()) if m.kind == item]
        elif any(ch in item for ch in "*?["):
            found = sorted(fnmatch.filter(_REGISTRY, item))
        elif item in _REGISTRY:
            found = [item]
        else:
            raise KeyError(f"unknown method {item!r}; known: {', '.join(sorted(_REGISTRY))}")
        if not found:
            raise KeyError(f"selection {item!r} matches no registered method")
        out.extend(n for n in found if n not in out)
    return out
