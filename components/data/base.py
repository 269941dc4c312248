"""What every data kind shares: the dataset containers and the stratified, leak-free split."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split


@dataclass(frozen=True)
class Dataset:
    """Model-ready arrays of one split: x float32 with a leading sample axis, y int64 labels."""

    x: np.ndarray
    y: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)


Split = dict[str, Dataset]  # "train" / "val" / "test"


def content_hashes(x: np.ndarray) -> list[str]:
    """One hash per sample, over its bytes: equal content means equal hash."""
    return [hashlib.sha256(np.ascontiguousarray(s).tobytes()).hexdigest()[:16] for s in x]


class DataKind(Protocol):
    name: str

    def load_source(self, source: str) -> Dataset:
        """Read the raw samples named by `source` (no preprocessing)."""

    def preprocess(self, raw: Dataset) -> Dataset:
        """Turn raw samples into model inputs."""

    def describe(self, data: Dataset) -> pd.DataFrame:
        """One row per sample with the columns the validation suite checks."""


def split_dataset(data: Dataset, val_fraction: float, test_fraction: float, seed: int) -> tuple[Split, int]:
    """Stratified train/val/test split after dropping exact duplicates, so no sample can sit in two splits.

    Returns the splits and the number of duplicates dropped.
    """
    _, first = np.unique(np.array(content_hashes(data.x)), return_index=True)
    keep = np.sort(first)
    x, y = data.x[keep], data.y[keep]
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_fraction / (1 - test_fraction), stratify=y[rest], random_state=seed
    )
    splits = {name: Dataset(x[i], y[i], dict(data.meta)) for name, i in (("train", train), ("val", val), ("test", test))}
    return splits, len(data) - len(keep)
