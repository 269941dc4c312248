"""Preprocessing from raw input to model input, driven by a JSON spec that travels with each registered model.

numpy only (no torch, no training code): `edgekd predict` and the pipeline both go through `transform`, so what
the model was evaluated on is exactly what a device computes.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Callable

import numpy as np


def image_transform(spec: dict, samples) -> np.ndarray:
    """(N, H, W) or (N, C, H, W) intensities -> float32 in [0, 1], channel axis first."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 3:
        x = x[:, None]
    return x / np.float32(spec["scale"])


def text_tokens(text: str, pattern: str, lowercase: bool = True, digits_to_zero: bool = False) -> list[str]:
    """Tokens of one message: what `fit` counts and `text_transform` looks up, so both agree by construction.
    `digits_to_zero` writes every digit as 0, so numbers of one length share a token (phone numbers, prices)."""
    if lowercase:
        text = text.lower()
    if digits_to_zero:
        text = _regex(r"\d").sub("0", text)
    return _regex(pattern).findall(text)


@functools.lru_cache(maxsize=8)
def _regex(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def text_transform(spec: dict, samples) -> np.ndarray:
    """Messages -> int64 token ids of fixed length `max_len` (first tokens kept, 0 pads, 1 marks a token the
    train split did not know). Tokenizer 'vocab' looks ids up in the fitted word list (id = 2 + rank);
    'hash' maps a token to 2 + crc32(token) mod `num_buckets` (stable across processes, unlike hash())."""
    if isinstance(samples, str):
        samples = [samples]
    n, pad, unk = int(spec["max_len"]), int(spec["pad_id"]), int(spec["unk_id"])
    if spec["tokenizer"] == "vocab":
        index = {w: i + 2 for i, w in enumerate(spec["vocab"])}
        to_id = lambda t: index.get(t, unk)  # noqa: E731
    else:
        buckets = int(spec["num_buckets"])
        to_id = lambda t: 2 + zlib.crc32(t.encode("utf-8", "surrogatepass")) % buckets  # noqa: E731
    out = np.full((len(samples), n), pad, dtype=np.int64)
    for row, text in enumerate(samples):
        tokens = text_tokens(str(text), spec["token_pattern"], spec["lowercase"], spec.get("digits_to_zero", False))
        ids = [to_id(t) for t in tokens[:n]]
        out[row, : len(ids)] = ids
    return out


def fixed_length(spec: dict, samples) -> np.ndarray:
    """Waveforms -> (N, seconds * sample_rate) float32: shorter ones centred in zeros, longer ones centre-cropped."""
    n = int(round(spec["seconds"] * spec["sample_rate"]))
    out = np.zeros((len(samples), n), dtype=np.float32)
    for i, s in enumerate(samples):
        s = np.asarray(s, dtype=np.float32)
        if len(s) <= n:
            start = (n - len(s)) // 2
            out[i, start : start + len(s)] = s
        else:
            start = (len(s) - n) // 2
            out[i] = s[start : start + n]
    return out


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters (HTK mel scale), each peaking at 1 on its centre frequency."""
    bins = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up, down = (bins[None] - lo) / (mid - lo), (hi - bins[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def log_mel(spec: dict, waves: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(N, samples) -> (N, n_mels, frames) log mel power: frames centred on multiples of `hop` (n_fft // 2 zeros
    on each side: 1 + samples // hop frames) or, with spec["center"] false, starting at them (1 + (samples - n_fft)
    // hop frames, MLPerf Tiny's KWS framing); periodic Hann window, log(power + log_eps)."""
    n_fft, hop = spec["n_fft"], spec["hop"]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    fb = mel_filterbank(
        spec["sample_rate"], n_fft, spec["n_mels"], spec.get("fmin", 0.0), spec.get("fmax", spec["sample_rate"] / 2)
    )
    pad = n_fft // 2 if spec.get("center", True) else 0
    padded = np.pad(np.asarray(waves, dtype=np.float32).reshape(len(waves), -1), ((0, 0), (pad, pad)))
    frames_per_wave = 1 + (padded.shape[1] - n_fft) // hop
    out = [np.zeros((0, spec["n_mels"], frames_per_wave), np.float32)]
    for i in range(0, len(padded), chunk):  # bounded memory: frames and spectra of `chunk` waves at a time
        frames = np.lib.stride_tricks.sliding_window_view(padded[i : i + chunk], n_fft, axis=1)[:, ::hop]
        power = (np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2).astype(np.float32)
        out.append(np.log(power @ fb.T + np.float32(spec.get("log_eps", 1e-6))).transpose(0, 2, 1))
    return np.concatenate(out).astype(np.float32)


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) orthonormal DCT-II: what turns log-mel bands into cepstral coefficients."""
    k, n = np.arange(n_out)[:, None], np.arange(n_in)[None]
    d = np.sqrt(2.0 / n_in) * np.cos(np.pi / n_in * (n + 0.5) * k)
    d[0] /= np.sqrt(2.0)
    return d.astype(np.float32)


def audio_features(spec: dict, waves: np.ndarray) -> np.ndarray:
    """(N, samples) -> (N, rows, frames): log-mels (rows = n_mels), or with spec["features"] "mfcc" the first
    n_mfcc cepstral coefficients of them (the DCT-II of each frame's log-mel bands, rows = n_mfcc)."""
    x = log_mel(spec, waves)
    if spec.get("features", "log_mel") == "mfcc":
        x = np.einsum("km,nmt->nkt", dct_matrix(spec["n_mfcc"], spec["n_mels"]), x)
    return x.astype(np.float32)


def audio_transform(spec: dict, samples) -> np.ndarray:
    """Mono waveforms at spec["sample_rate"] -> (N, 1, rows, frames) float32 log-mels or MFCCs, normalised with the
    train split's mean and std."""
    x = audio_features(spec, fixed_length(spec, samples))
    return ((x - np.float32(spec["mean"])) / np.float32(spec["std"]))[:, None].astype(np.float32)


def tabular_transform(spec: dict, samples) -> np.ndarray:
    """Rows of raw feature values (N, n_features), or a DataFrame with the spec's feature columns (any order) ->
    float32 standardised with the train split's mean and std."""
    if hasattr(samples, "columns"):  # a DataFrame: pick the features by name, in the order the model expects
        missing = [f for f in spec["features"] if f not in samples.columns]
        if missing:
            raise ValueError(f"tabular input lacks feature columns {missing}")
        samples = samples[spec["features"]].to_numpy()
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != len(spec["features"]):
        raise ValueError(f"tabular input of shape {x.shape}: expected (N, {len(spec['features'])}) feature values")
    return ((x - np.asarray(spec["mean"])) / np.asarray(spec["std"])).astype(np.float32)


TRANSFORMS: dict[str, Callable[[dict, object], np.ndarray]] = {
    "tabular": tabular_transform,
    "image": image_transform,
    "text": text_transform,
    "audio": audio_transform,
}


def transform(spec: dict, samples) -> np.ndarray:
    """Model inputs for a batch of raw samples, per the spec's kind."""
    try:
        fn = TRANSFORMS[spec["kind"]]
    except KeyError:
        raise ValueError(
            f"preprocessing spec of unknown kind {spec.get('kind')!r}; known: {sorted(TRANSFORMS)}"
        ) from None
    x = fn(spec, samples)
    assert list(x.shape[1:]) == list(spec["input_shape"]), (x.shape, spec["input_shape"])
    return x
