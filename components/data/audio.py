"""Audio kind (keyword spotting): a folder of WAV files, labelled by sub-folder or by a file-name pattern,
optionally inside train/, val/ and test/ sub-folders (the source's own splits).

Raw samples are mono float32 waveforms in [-1, 1] at the file's own sample rate (kept per file in
`meta["sample_rate"]`); the fitted preprocessing (components.preprocess.audio_transform) pads or crops them to a
fixed length and turns them into normalised log-mel spectrograms.
"""
from __future__ import annotations

import re
import struct
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from components.data.base import DataError, Expectation, RawData, has_split_folders, unlabelled
from components.data.options import AudioOptions
CLIP_LEVEL = 0.999  # |x| at or above this counts as a clipped sample


def to_float(x: np.ndarray) -> np.ndarray:
    """PCM or float samples -> float32 in [-1, 1] (float input is kept as is, so out-of-range values stay visible)."""
    if x.dtype == np.int16:
        return x.astype(np.float32) / np.float32(32768)
    if x.dtype == np.int32:  # 24-bit WAVs are read left-justified into int32 as well
        return (x.astype(np.float64) / 2147483648.0).astype(np.float32)
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - 128) / np.float32(128)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32)
    raise ValueError(f"unsupported sample type {x.dtype}")


def read_wav(path: Path) -> tuple[int, np.ndarray]:
    """(sample rate, mono float32 waveform); several channels are averaged."""
    from scipy.io import wavfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wavfile.WavFileWarning)  # unknown chunks are harmless
            rate, x = wavfile.read(path)
        x = to_float(np.asarray(x))
    except (ValueError, OSError, EOFError, IndexError, struct.error) as e:  # how scipy fails on bad bytes
        raise DataError(f"{path}: unreadable or corrupt WAV file ({e})") from e
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32)
    return int(rate), np.ascontiguousarray(x, dtype=np.float32)


def _norm(v) -> str:
    """Values of the test rule compare as text, integers without leading zeros ('007' == 7)."""
    s = str(v)
    return str(int(s)) if s.isdigit() else s


class AudioKind:
    """Options: components.data.options.AudioOptions (`test_rule` is not for sources with train/, val/ and test/
    sub-folders, which give the splits themselves)."""

    name = "audio"
    Options = AudioOptions

    @property
    def augment(self):
        return spec_augment

    # --- reading ---------------------------------------------------------------------------------------------

    def load(self, source: str, options: AudioOptions) -> RawData:
        root = Path(source)
        if not root.is_dir():
            raise DataError(f"audio source {source}: expected a folder of .wav files")
        mode = options.label_from
        splits = has_split_folders(root)
        if mode == "folder":
            files = sorted(p for p in root.glob("*/*/*" if splits else "*/*") if p.suffix.lower() == ".wav")
        else:
            files = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".wav")
        if not files:
            where = "class sub-folders of " if mode == "folder" else ""
            raise DataError(f"{root}: no .wav files in {where}the folder" + (" or its train/, val/ and test/"
                                                                              if splits else ""))
        labels, groups = self._labels(root, files, mode, options)
        waves, meta, info = self._read(root, files)
        meta |= groups
        if splits:
            if options.test_rule:
                raise DataError(f"{root}: audio option test_rule and the source's own test/ folder both say which "
                                "files are test; drop test_rule")
            split = np.array([p.relative_to(root).parts[0] for p in files])
        else:
            split = self._test_rule(meta, options)
        return RawData(waves, np.array(labels), meta, info, split)

    def load_unlabelled(self, source: str, options: AudioOptions, like: RawData | None = None) -> RawData:
        """A folder of .wav files, flat or nested; file and folder names carry nothing (no pattern, no label)."""
        root = Path(source)
        if not root.is_dir():
            raise DataError(f"unlabelled audio pool {source}: expected a folder of .wav files")
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".wav")
        if not files:
            raise DataError(f"{root}: no .wav files in the folder or its sub-folders")
        waves, meta, info = self._read(root, files)
        return unlabelled(waves, meta, info, root)

    @staticmethod
    def _read(root: Path, files: list[Path]) -> tuple[list[np.ndarray], dict[str, np.ndarray], dict]:
        """Waveforms of `files`, their meta (file relative to `root`, sample_rate) and info (the rates found)."""
        waves, rates = [], []
        for p in files:
            rate, x = read_wav(p)
            waves.append(x)
            rates.append(rate)
        meta = {"file": np.array([p.relative_to(root).as_posix() for p in files]),
                "sample_rate": np.array(rates, dtype=np.int64)}
        return waves, meta, {"sample_rates": sorted(set(rates))}

    def _labels(self, root: Path, files: list[Path], mode: str, options: AudioOptions
                ) -> tuple[list[str], dict[str, np.ndarray]]:
        if mode == "folder":
            return [p.parent.name for p in files], {}
        try:
            pattern = re.compile(options.pattern)
        except re.error as e:
            raise DataError(f"audio option pattern {options.pattern!r} is not a valid regex: {e}") from None
        if "label" not in pattern.groupindex:
            raise DataError(f"audio option pattern {pattern.pattern!r} needs a named group 'label'")
        names = [g for g in pattern.groupindex if g != "label"]
        if {"file", "sample_rate"} & set(names):
            raise DataError(f"audio option pattern {pattern.pattern!r}: groups 'file' and 'sample_rate' are reserved "
                            "(the loader fills them)")
        labels, cols = [], {g: [] for g in names}
        for p in files:
            m = pattern.match(p.name)
            if m is None:
                raise DataError(f"{p.relative_to(root)}: file name does not match the pattern {pattern.pattern!r}")
            labels.append(m["label"])
            for g in names:
                cols[g].append(m[g] or "")  # an optional group that did not take part is empty
        return labels, {g: np.array(v, dtype=str) for g, v in cols.items()}

    @staticmethod
    def _test_rule(meta: dict, options: AudioOptions) -> np.ndarray | None:
        """Each file's split under option `test_rule`: "test" where it matches, "" (split at random) elsewhere."""
        rule = options.test_rule
        if not rule:
            return None
        if rule.field not in meta:
            raise DataError(f"audio option test_rule.field {rule.field!r} is not a meta column; have {sorted(meta)}")
        values = {_norm(v) for v in rule.values}
        test = np.array([_norm(v) in values for v in meta[rule.field]], dtype=bool)
        if not test.any():
            raise DataError(f"audio option test_rule {rule.model_dump()}: no file matches, so there would be no test "
                            "split")
        return np.where(test, "test", "")

    # --- on-disk form: one concatenated waveform and the offsets of each file in it --------------------------

    def pack(self, samples) -> dict[str, np.ndarray]:
        lengths = np.array([len(s) for s in samples], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        wave = np.concatenate(samples).astype(np.float32) if len(samples) else np.zeros(0, np.float32)
        return {"wave": wave, "offsets": offsets}

    def unpack(self, arrays: dict[str, np.ndarray]):
        wave, off = arrays["wave"], arrays["offsets"]
        return [wave[off[i]:off[i + 1]] for i in range(len(off) - 1)]

    # --- checks ----------------------------------------------------------------------------------------------

    def describe(self, raw: RawData, options: AudioOptions) -> pd.DataFrame:
        rates = np.asarray(raw.meta["sample_rate"], dtype=np.int64)
        n = np.array([len(s) for s in raw.samples])
        stats = np.array([self._stats(s) for s in raw.samples], dtype=np.float64).reshape(len(raw), 4)
        df = pd.DataFrame({"sample_rate": rates, "duration_s": n / rates, "peak": stats[:, 0],
                           "clipped_fraction": stats[:, 1], "rms": stats[:, 2],
                           "non_finite": stats[:, 3].astype(np.int64), "label": raw.labels})
        rule = None if raw.info.get("unlabelled") else options.test_rule  # a pool is never split
        if rule:
            col = raw.meta.get(rule.field)
            df["test_rule_field"] = [None if v == "" else str(v) for v in col] if col is not None else None
        return df

    @staticmethod
    def _stats(x: np.ndarray) -> tuple[float, float, float, int]:
        finite = np.isfinite(x)
        if not len(x):
            return 0.0, 0.0, 0.0, 0
        y = np.where(finite, x, 0).astype(np.float64)
        return float(np.abs(y).max()), float((np.abs(y) >= CLIP_LEVEL).mean()), float(np.sqrt((y ** 2).mean())), \
            int((~finite).sum())

    def expectations(self, raw: RawData, options: AudioOptions) -> list[Expectation]:
        rate = options.sample_rate
        if rate is None:  # no expected rate: all files must share the most common one
            values, counts = np.unique(raw.meta["sample_rate"], return_counts=True)
            rate = int(values[counts.argmax()])
        exps: list[Expectation] = [
            ("ExpectColumnValuesToBeInSet", {"column": "sample_rate", "value_set": [int(rate)]}),
            ("ExpectColumnValuesToBeInSet", {"column": "non_finite", "value_set": [0]}),
            ("ExpectColumnValuesToBeBetween", {"column": "peak", "min_value": 0.0, "max_value": 1.0}),
            ("ExpectColumnValuesToBeBetween", {"column": "duration_s", "min_value": options.min_seconds,
                                               "max_value": options.max_seconds}),
            ("ExpectColumnValuesToBeBetween", {"column": "clipped_fraction", "min_value": 0.0,
                                               "max_value": options.max_clipped_fraction}),
            ("ExpectColumnValuesToBeBetween", {"column": "rms", "min_value": options.min_rms}),
        ]
        rule = None if raw.info.get("unlabelled") else options.test_rule
        if rule:
            exps.append(("ExpectColumnValuesToNotBeNull", {"column": "test_rule_field"}))
            if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in rule.values):
                # an integer rule (FSDD's recording index) only makes sense over non-negative integer values
                exps.append(("ExpectColumnValuesToMatchRegex", {"column": "test_rule_field", "regex": r"^\d+$"}))
        return exps

    # --- preprocessing ---------------------------------------------------------------------------------------

    def fit(self, train: RawData, options: AudioOptions) -> dict:
        from components.preprocess import audio_features, fixed_length

        rates = np.asarray(train.meta["sample_rate"])
        values, counts = np.unique(rates, return_counts=True)
        sr = int(options.sample_rate or values[counts.argmax()])
        o = options
        spec = {"kind": "audio", "sample_rate": sr, "seconds": float(o.seconds), "n_fft": o.n_fft, "hop": o.hop,
                "n_mels": o.n_mels, "fmin": float(o.fmin), "fmax": float(o.fmax or sr / 2), "center": o.center,
                "features": o.features, "n_mfcc": o.n_mfcc}
        if not 0 <= spec["fmin"] < spec["fmax"] <= sr / 2:
            raise DataError(f"audio options fmin={spec['fmin']}, fmax={spec['fmax']}: need 0 <= fmin < fmax <= "
                            f"sample_rate / 2 = {sr / 2}")
        if o.features == "mfcc" and not 1 <= o.n_mfcc <= o.n_mels:
            raise DataError(f"audio options n_mfcc={o.n_mfcc}: need 1 <= n_mfcc <= n_mels = {o.n_mels}")
        feats = audio_features(spec, fixed_length(spec, train.samples))
        spec |= {"mean": float(feats.mean()), "std": float(feats.std()) or 1.0}
        spec |= {"input_shape": [1, *feats.shape[1:]], "input_dtype": "float32"}
        return spec


def spec_augment(x, gen, max_shift: int = 8, max_time_mask: int = 8, max_freq_mask: int = 4):
    """Training-only augmentation of (N, 1, mels, frames) log-mels: a random circular time shift of each sample
    (the clips are centred in silence, so this moves the word), then one time and one frequency band set to 0,
    the train mean after normalisation (SpecAugment)."""
    import torch

    n, _, m, t = x.shape
    shift = torch.randint(-max_shift, max_shift + 1, (n,), generator=gen)
    cols = (torch.arange(t)[None, :] - shift[:, None]) % t
    x = torch.gather(x, 3, cols[:, None, None, :].expand(n, 1, m, t))
    keep = torch.ones(n, 1, m, t)
    for size, length, axis in ((max_time_mask, t, 3), (max_freq_mask, m, 2)):
        width = torch.randint(0, size + 1, (n,), generator=gen)
        start = (torch.rand(n, generator=gen) * (length - width + 1)).long()
        pos = torch.arange(length)[None, :]
        band = (pos >= start[:, None]) & (pos < (start + width)[:, None])  # (n, length)
        keep = keep * (~band).float().view(n, 1, *((1, length) if axis == 3 else (length, 1)))
    return x * keep
