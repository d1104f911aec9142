"""Fusion baselines. Importing this package registers every method module in it."""
from __future__ import annotations

import pkgutil
from importlib import import_module

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_"):
        import_module(f"{__name__}.{_mod.name}")
