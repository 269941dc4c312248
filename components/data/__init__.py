"""Data kinds as plug-ins: config names a kind, the registry maps it to its implementation.

A kind reads a source into raw samples, describes and checks them, and fits the preprocessing that turns them
into model inputs (components.preprocess applies it). The flow never branches on the kind.

The names below are loaded on first use (PEP 562), so that reading the configuration, which imports
components.data.options, does not import the readers (pandas, scikit-learn, scipy).
"""

from __future__ import annotations

from importlib import import_module

_HOME = {"DataError": "base", "DataKind": "base", "Dataset": "base", "RawData": "base", "Split": "base",
         "content_hashes": "base", "KINDS": "kinds", "get_kind": "kinds"}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'components.data' has no attribute {name!r}")
    return getattr(import_module(f"components.data.{_HOME[name]}"), name)
