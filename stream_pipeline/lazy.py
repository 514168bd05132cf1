"""Lazy package faces: a package's public names import their modules on first use.

Importing ``stream_pipeline`` (or its ``model`` and ``consumers`` packages) must not load
onnxruntime, PyAV or numba; the names resolve through the module ``__getattr__`` of PEP 562.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``exports[name]`` is the module that defines
    ``name``; it is imported on first use and the value kept in the package's namespace."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
