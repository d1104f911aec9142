"""Fusion baselines. Importing this package registers every method module in it.

A module that fails to import is reported with a warning and skipped, so one broken method never
hides the others from the registry.
"""
from __future__ import annotations

import pkgutil
import warnings
from importlib import import_module

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_"):
        try:
            import_module(f"{__name__}.{_mod.name}")
        except Exception as exc:  # noqa: BLE001 - isolate broken method modules
            warnings.warn(f"fusionbench: method module {__name__}.{_mod.name} failed to import: "
                          f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
