"""Dataset specs on the command line, and the one entry point the harness loads data through.

A spec is ``KIND`` or ``KIND:PARAMS``:

- ``phantom`` -- the built-in synthetic set with default parameters;
- ``phantom:n=200,size=300,misalign=severe`` -- comma-separated ``key=value`` parameters of
  :meth:`fusionbench.data.phantom.PhantomConfig.from_params` (``n`` = number of test pairs);
- ``folder:PATH`` -- the user's pairs, or PAT-only images
  (:func:`fusionbench.data.folder.load_folder`); loader options may follow the path as
  ``folder:PATH,resize=256x256,intensity=minmax,to_gray=true,slice_axis=0``. Only these
  option names are split off, so a path may contain commas. Two more options derive data from
  the files:

  - ``split=auto`` (or ``split=auto:0.7/0.1/0.2``) -- a deterministic train/val/test split for a
    folder that has none, by a hash of each pair's file stem (70/10/20 % by default;
    :func:`fusionbench.data.folder.auto_split`). Without it such a folder is all ``test``.
  - ``misalign=mild|moderate|severe`` with optional ``seed=N`` (default 0) -- the pairs are
    registered: each PAT is moved by the phantom's deformation model and the true flow is
    recorded, giving endpoint errors (and warped-label Dice where labels exist) on real images
    (:mod:`fusionbench.data.misalign`).

Values are typed on parsing: integers, floats, ``true``/``false``, ``HxW`` sizes (``resize``)
and otherwise strings.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from .case import Case

__all__ = ["parse_dataset_spec", "load_dataset", "dataset_fingerprint", "describe_dataset", "DATASET_KINDS",
           "FOLDER_OPTIONS", "FOLDER_KEYWORDS"]

DATASET_KINDS = ("phantom", "folder")
#: Options of ``folder:`` specs; they change the loaded data, so they enter the fingerprint.
FOLDER_OPTIONS = ("resize", "to_gray", "intensity", "slice_axis", "split", "misalign", "seed")
#: Keywords of ``load_folder`` that ``load_dataset``/``dataset_fingerprint`` accept as overrides.
FOLDER_KEYWORDS = ("resize", "to_gray", "intensity", "slice_axis", "split_fractions", "misalign",
                   "misalign_seed")
#: Spec option -> ``load_folder`` keyword, where the names differ.
_OPTION_KEYWORD = {"split": "split_fractions", "seed": "misalign_seed"}
_SIZE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")
_FOLDER_OPTION = re.compile(r",\s*(" + "|".join(FOLDER_OPTIONS) + r")\s*=([^,]*)$")


def _typed(key: str, text: str) -> Any:
    value = text.strip()
    if key == "resize":
        size = _SIZE.match(value)
        if size:
            return int(size.group(1)), int(size.group(2))
    low = value.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            pass
    return value


def _parse_params(spec: str, text: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in text.split(","):
        if not item.strip():
            raise ValueError(f"dataset spec {spec!r}: empty parameter (stray comma?)")
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise ValueError(f"dataset spec {spec!r}: parameter {item.strip()!r} is not key=value")
        if key in params:
            raise ValueError(f"dataset spec {spec!r}: parameter {key!r} given twice")
        params[key] = _typed(key, value)
    return params


def parse_dataset_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split a dataset spec into its kind and typed parameters.

    Examples
    --------
    >>> parse_dataset_spec("phantom:n=200,size=300,misalign=severe")
    ('phantom', {'n': 200, 'size': 300, 'misalign': 'severe'})
    >>> parse_dataset_spec("folder:/data/mice,resize=256x256")
    ('folder', {'path': '/data/mice', 'resize': (256, 256)})

    Raises
    ------
    ValueError
        Unknown kind, a parameter that is not ``key=value``, a repeated key, a folder spec
        without a path or with an unknown option.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"dataset spec must be a non-empty string such as 'phantom' or 'folder:PATH', got {spec!r}")
    spec = spec.strip()
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "phantom":
        return kind, (_parse_params(spec, rest) if rest.strip() else {})
    if kind == "folder":
        options: dict[str, Any] = {}
        while (match := _FOLDER_OPTION.search(rest)) is not None:
            key, value = match.group(1), match.group(2)
            if key in options:
                raise ValueError(f"dataset spec {spec!r}: option {key!r} given twice")
            if not value.strip():
                raise ValueError(f"dataset spec {spec!r}: option {key!r} has no value")
            options[key] = _typed(key, value)
            rest = rest[: match.start()]
        if not rest.strip():
            raise ValueError(f"dataset spec {spec!r}: missing path (write folder:PATH)")
        return kind, {"path": rest.strip(), **dict(reversed(list(options.items())))}
    hint = ""
    if Path(spec).exists():
        hint = f" (to use the folder, write folder:{spec})"
    raise ValueError(f"unknown dataset kind {kind!r} in spec {spec!r}; expected 'phantom[:key=value,...]' "
                     f"or 'folder:PATH'{hint}")


def describe_dataset(spec: str) -> str:
    """A short label for tables and provenance records that names the phantom's look even when the
    spec leaves it to the default, e.g. ``"phantom 2.0"`` or ``"phantom 1.2 (n=16)"``; other
    specs are returned as given."""
    kind, params = parse_dataset_spec(spec)
    if kind != "phantom":
        return spec.strip()
    version = _phantom_config(params).version
    rest = ",".join(f"{k}={v}" for k, v in params.items() if k != "version")
    return f"phantom {version}" + (f" ({rest})" if rest else "")


def _phantom_config(params: dict[str, Any]):
    try:
        from .phantom import PhantomConfig
    except ImportError as exc:
        raise ImportError(f"the phantom dataset is not available ({exc})") from exc
    return PhantomConfig.from_params(**params)


def _folder_options(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The ``load_folder`` keywords of a parsed folder spec, ``overrides`` (keywords) winning."""
    unknown = set(params) - {"path", *FOLDER_OPTIONS}
    if unknown:
        raise ValueError(f"folder dataset: unknown option(s) {', '.join(sorted(unknown))}; "
                         f"expected {', '.join(FOLDER_OPTIONS)}")
    options = {_OPTION_KEYWORD.get(k, k): v for k, v in params.items() if k != "path"}
    options.update({k: v for k, v in overrides.items() if k in FOLDER_KEYWORDS})
    if options.get("split_fractions") is not None:
        from .folder import parse_split_option

        options["split_fractions"] = parse_split_option(options["split_fractions"])
    if options.get("misalign") is not None:
        from .misalign import check_level

        options["misalign"] = check_level(options["misalign"])
    seed = options.get("misalign_seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"folder dataset: seed={seed!r} must be an integer")
        if options.get("misalign") is None:
            raise ValueError(f"folder dataset: seed={seed} without misalign= (the seed is misalign's: "
                             "folder:PATH,misalign=moderate,seed=1)")
    return options


def load_dataset(spec: str, split: str = "test", **kw) -> list[Case]:
    """Load the cases of one split of the dataset named by ``spec``.

    Parameters
    ----------
    spec : str
        A dataset spec (module docstring).
    split : {"train", "val", "test"}
        The split. Folder data without a split define only ``"test"``; asking them for another
        split raises :class:`fusionbench.data.folder.SplitError` with instructions.
    **kw
        Loader options: for ``phantom`` the keywords of ``load_phantom`` (``cache_dir``,
        ``jobs``, ``progress``); for ``folder`` those of ``load_folder`` (``resize``,
        ``to_gray``, ``intensity``, ``slice_axis``, ``split_fractions``, ``misalign``,
        ``misalign_seed``: :data:`FOLDER_KEYWORDS`), overriding the spec's. Options that change
        the data belong in the spec, so that :func:`dataset_fingerprint` sees them (or pass the
        same keywords to it).
    """
    kind, params = parse_dataset_spec(spec)
    if kind == "phantom":
        from .phantom import load_phantom

        return load_phantom(split, cfg=_phantom_config(params), **kw)
    from .folder import load_folder

    unknown = set(kw) - set(FOLDER_KEYWORDS)
    if unknown:
        raise TypeError(f"load_dataset({spec!r}): unknown folder option(s) {', '.join(sorted(unknown))}")
    return load_folder(params["path"], split=split, **_folder_options(params, kw))


def _canonical(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _canonical(value.tolist())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _digest(record: dict[str, Any]) -> str:
    text = json.dumps(_canonical(record), sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataset_fingerprint(spec: str, **kw) -> str:
    """A stable 16-hex-digit hash that changes whenever the data of ``spec`` may change.

    ``phantom``: the full :class:`PhantomConfig` the parameters resolve to (so ``phantom`` and
    ``phantom:size=256`` agree when 256 is the default) and ``GENERATOR_VERSION``.
    ``folder``: the loader options and version, and every file the dataset reads (manifest
    included) as path relative to the dataset, size and modification time (ns); contents are
    not hashed, so touching a file changes the fingerprint. ``split=auto`` adds its fractions
    and rule; ``misalign=`` adds its level, seed and the versions of the deformation model (the
    phantom's ``GENERATOR_VERSION`` and ``MISALIGN_VERSION``); without them the record is the
    one of earlier versions, so existing fingerprints stay valid. Keyword arguments are the
    folder options of :func:`load_dataset` (ignored for the phantom's runtime options).
    """
    kind, params = parse_dataset_spec(spec)
    if kind == "phantom":
        from .phantom import GENERATOR_VERSION

        return _digest({"kind": kind, "config": _phantom_config(params).record(),
                        "generator": GENERATOR_VERSION})
    from .folder import LOADER_VERSION, folder_files

    root = Path(params["path"])
    base = root.parent if root.is_file() else root
    files = []
    for f in folder_files(root):
        st = f.stat()
        files.append([f.relative_to(base).as_posix() if f.is_relative_to(base) else str(f.resolve()),
                      st.st_size, st.st_mtime_ns])
    from .folder import _normalise_resize

    options = {"resize": None, "to_gray": False, "intensity": "auto", "slice_axis": None,
               **_folder_options(params, kw)}
    options["resize"] = _normalise_resize(options["resize"])
    # Derived-data options enter the record only when set (older fingerprints stay as they were).
    fractions = options.pop("split_fractions", None)
    if fractions is not None:
        from .folder import AUTO_SPLIT_RULE

        options["split_auto"] = {"fractions": fractions, "rule": AUTO_SPLIT_RULE}
    level, seed = options.pop("misalign", None), options.pop("misalign_seed", None)
    if level is not None:
        from .misalign import MISALIGN_VERSION
        from .phantom import GENERATOR_VERSION

        options["misalign"] = {"level": level, "seed": 0 if seed is None else seed,
                               "model": [GENERATOR_VERSION, MISALIGN_VERSION]}
    return _digest({"kind": kind, "loader": LOADER_VERSION, "options": options, "files": files})
