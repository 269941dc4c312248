"""The registry of data kinds: a kind's name (`datasets.NAME.kind`) -> its implementation."""

from __future__ import annotations

from components.data.audio import AudioKind
from components.data.base import DataKind
from components.data.images import ImageKind
from components.data.tabular import TabularKind
from components.data.text import TextKind

KINDS: dict[str, DataKind] = {"tabular": TabularKind(), "image": ImageKind(), "audio": AudioKind(), "text": TextKind()}


def get_kind(name: str) -> DataKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown data kind {name!r}; expected one of {sorted(KINDS)}") from None
