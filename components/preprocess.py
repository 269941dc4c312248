"""Preprocessing from raw input to model input, driven by a JSON spec that travels with each registered model.

numpy only (no torch, no training code): `edgekd predict` and the pipeline both go through `transform`, so what
the model was evaluated on is exactly what a device computes.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def image_transform(spec: dict, samples) -> np.ndarray:
    """(N, H, W) or (N, C, H, W) intensities -> float32 in [0, 1], channel axis first."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 3:
        x = x[:, None]
    return x / np.float32(spec["scale"])


TRANSFORMS: dict[str, Callable[[dict, object], np.ndarray]] = {"image": image_transform}


def transform(spec: dict, samples) -> np.ndarray:
    """Model inputs for a batch of raw samples, per the spec's kind."""
    try:
        fn = TRANSFORMS[spec["kind"]]
    except KeyError:
        raise ValueError(f"preprocessing spec of unknown kind {spec.get('kind')!r}; known: {sorted(TRANSFORMS)}")
    x = fn(spec, samples)
    assert list(x.shape[1:]) == list(spec["input_shape"]), (x.shape, spec["input_shape"])
    return x
