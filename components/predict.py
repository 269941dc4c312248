"""Raw input -> prediction with nothing but a model file and its preprocessing spec (no training code): an ONNX file
through ONNX Runtime (no torch), or an ExecuTorch `.pte` program through the ExecuTorch runtime.

A raw input is what a device sees: an image file, a wav file, a line of text, a CSV row of measurements.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.preprocess import transform


def read_image(spec: dict, arg: str):
    from PIL import Image

    mode = "L" if spec["input_shape"][0] == 1 else "RGB"
    with Image.open(arg) as im:
        a = np.asarray(im.convert(mode), dtype=np.float32)
    return a if a.ndim == 2 else a.transpose(2, 0, 1)


def read_text(spec: dict, arg: str) -> str:
    return arg


def read_csv_row(spec: dict, arg: str) -> np.ndarray:
    """A row of feature values in the spec's feature order, comma-separated."""
    fields = [f.strip() for f in arg.split(",")]
    if len(fields) != len(spec["features"]):
        raise ValueError(
            f"CSV row has {len(fields)} values; the model expects {len(spec['features'])}: "
            f"{', '.join(spec['features'])}"
        )
    try:
        return np.array([float(f) for f in fields])
    except ValueError as e:
        raise ValueError(f"CSV row: {e}") from None


def read_audio(spec: dict, arg: str) -> np.ndarray:
    """A WAV file read exactly as the audio kind reads its training data (same scaling to [-1, 1], channels
    averaged); the model's preprocessing does not resample, so the file must be at the spec's sample rate."""
    from components.data.audio import read_wav

    rate, x = read_wav(Path(arg))
    if rate != spec["sample_rate"]:
        raise ValueError(f"{arg}: sample rate {rate} Hz; the model expects {spec['sample_rate']} Hz audio")
    return x


READERS: dict[str, Callable[[dict, str], object]] = {
    "image": read_image,
    "text": read_text,
    "tabular": read_csv_row,
    "audio": read_audio,
}


def read_input(spec: dict, arg: str):
    """One raw sample from a command-line argument (a file path, or the text / CSV row itself)."""
    try:
        reader = READERS[spec["kind"]]
    except KeyError:
        raise ValueError(f"no raw-input reader for kind {spec.get('kind')!r}; known: {sorted(READERS)}") from None
    return reader(spec, arg)


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float  # of `label`
    probabilities: dict[str, float]  # of every class


def predict(model_path: str | Path, spec: dict, raw_samples: list) -> list[Prediction]:
    """Label and class probabilities for each raw sample, computed by the model's runtime."""
    from components.formats import runtime
    from components.formats.base import softmax

    x = transform(spec, raw_samples)
    probs = softmax(runtime.predict(model_path, x).astype(np.float64))
    classes = spec["classes"]
    return [
        Prediction(classes[int(p.argmax())], float(p.max()), {c: float(v) for c, v in zip(classes, p)}) for p in probs
    ]
