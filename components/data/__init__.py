"""Data kinds as plug-ins: config names a kind, the registry maps it to its implementation.

A kind reads a source into raw samples, describes and checks them, and fits the preprocessing that turns them
into model inputs (components.preprocess applies it). The flow never branches on the kind.
"""
from __future__ import annotations

from components.data.audio import AudioKind
from components.data.base import DataError, DataKind, Dataset, RawData, Split, content_hashes
from components.data.images import ImageKind
from components.data.tabular import TabularKind
from components.data.text import TextKind

KINDS: dict[str, DataKind] = {"tabular": TabularKind(), "image": ImageKind(), "audio": AudioKind(), "text": TextKind()}


def get_kind(name: str) -> DataKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown data kind {name!r}; expected one of {sorted(KINDS)}") from None


__all__ = ["KINDS", "DataError", "DataKind", "Dataset", "RawData", "Split", "content_hashes", "get_kind"]
