"""Data kinds as plug-ins: config names a kind, the registry maps it to its implementation.

A kind turns a source into raw arrays, raw arrays into model inputs, and model inputs into
per-sample descriptors that the validation suite checks. The flow never branches on the kind.
"""
from __future__ import annotations

from components.data.base import DataKind, Dataset, Split, split_dataset
from components.data.images import ImageKind

KINDS: dict[str, DataKind] = {"image": ImageKind()}


def get_kind(name: str) -> DataKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown data kind {name!r}; expected one of {sorted(KINDS)}") from None


__all__ = ["KINDS", "DataKind", "Dataset", "Split", "get_kind", "split_dataset"]
