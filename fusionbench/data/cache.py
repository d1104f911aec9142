"""A small on-disk cache of numpy arrays, keyed by a generator version and its parameters.

Each entry is one ``.npz`` file under ``ROOT/NAMESPACE/KEY/NAME.npz`` where KEY is the SHA-256 of
the canonical JSON of ``(version, params)``. Entries are written atomically (temporary file and
rename), so concurrent writers and killed processes never leave half a file; a reader sees either
nothing or a whole entry. JSON-able metadata travels in the same file.

The default root is ``$FUSIONBENCH_CACHE`` or ``~/.cache/fusionbench``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .io import atomic_write_bytes

__all__ = ["default_cache_dir", "cache_key", "NpzCache"]

_META_KEY = "__meta_json__"


def default_cache_dir() -> Path:
    """``$FUSIONBENCH_CACHE`` if set, else ``~/.cache/fusionbench``."""
    env = os.environ.get("FUSIONBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fusionbench"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    raise TypeError(f"cache parameters must be JSON-like (str, int, float, bool, None, list, dict); "
                    f"got {type(value).__name__}")


def cache_key(version: str, params: Mapping[str, Any]) -> str:
    """Hex SHA-256 (first 16 characters) of the canonical JSON of ``(version, params)``."""
    text = json.dumps({"version": str(version), "params": _jsonable(params)}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class NpzCache:
    """Entries of arrays + metadata for one (namespace, version, params) combination.

    Parameters
    ----------
    namespace : str
        A folder name grouping one producer's entries (e.g. ``"phantom"``).
    version : str
        The producer's version; changing it invalidates every entry.
    params : mapping
        JSON-like parameters that determine the content.
    root : path-like, optional
        Cache root; :func:`default_cache_dir` when None.
    """

    def __init__(self, namespace: str, version: str, params: Mapping[str, Any], root=None):
        self.key = cache_key(version, params)
        self.dir = Path(root).expanduser() if root is not None else default_cache_dir()
        self.dir = self.dir / namespace / self.key
        self._params = {"version": str(version), "params": _jsonable(params)}

    def path(self, name: str) -> Path:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"invalid cache entry name {name!r}")
        return self.dir / f"{name}.npz"

    def __contains__(self, name: str) -> bool:
        return self.path(name).is_file()

    def save(self, name: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> Path:
        """Write one entry atomically (uncompressed .npz: reading it back is a memory copy)."""
        if _META_KEY in arrays:
            raise ValueError(f"array name {_META_KEY!r} is reserved")
        buf = io.BytesIO()
        payload = {k: np.asarray(v) for k, v in arrays.items()}
        payload[_META_KEY] = np.array(json.dumps(_jsonable(dict(meta or {}))))
        np.savez(buf, **payload)
        path = self.path(name)
        params_file = self.dir / "params.json"
        if not params_file.exists():
            atomic_write_bytes(params_file, json.dumps(self._params, indent=1).encode())
        atomic_write_bytes(path, buf.getvalue())
        return path

    def load(self, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The entry's ``(arrays, meta)``, or None when absent or unreadable (then it is recomputed)."""
        path = self.path(name)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files if k != _META_KEY}
                meta = json.loads(str(data[_META_KEY])) if _META_KEY in data.files else {}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None
        return arrays, meta

    def get_or_create(self, name: str, make: Callable[[], tuple[Mapping[str, np.ndarray], Mapping[str, Any]]]):
        """Load ``name``, or call ``make()`` -> ``(arrays, meta)``, store and return it."""
        hit = self.load(name)
        if hit is not None:
            return hit
        arrays, meta = make()
        self.save(name, arrays, meta)
        return dict(arrays), dict(meta)
