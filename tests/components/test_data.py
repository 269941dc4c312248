import numpy as np
import pytest

from components.data import Dataset, get_kind, split_dataset
from components.data.base import content_hashes


def test_digits_source_and_preprocessing():
    kind = get_kind("image")
    raw = kind.load_source("sklearn:digits")
    assert raw.x.shape == (1797, 8, 8) and raw.meta["scale"] == 16.0
    x = kind.preprocess(raw).x
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0


def test_split_is_stratified_disjoint_and_seeded(digits_splits):
    kind = get_kind("image")
    data = kind.preprocess(kind.load_source("sklearn:digits"))
    again, dropped = split_dataset(data, 0.15, 0.2, 42)
    assert dropped == 0
    assert sum(len(s) for s in digits_splits.values()) == 1797
    assert len(digits_splits["test"]) == 360
    assert np.array_equal(again["test"].y, digits_splits["test"].y)
    hashes = {n: set(content_hashes(s.x)) for n, s in digits_splits.items()}
    assert not hashes["train"] & hashes["test"] and not hashes["train"] & hashes["val"]
    fractions = np.bincount(digits_splits["test"].y) / np.bincount(data.y)
    assert np.all(np.abs(fractions - 0.2) < 0.02)


def test_duplicates_are_dropped_before_splitting():
    x = np.repeat(np.arange(40, dtype=np.float32)[:, None], 2, axis=0)  # every sample twice
    y = np.repeat(np.arange(40) % 2, 2)
    splits, dropped = split_dataset(Dataset(x, y), 0.25, 0.25, 0)
    assert dropped == 40
    assert sum(len(s) for s in splits.values()) == 40


def test_npz_source(tmp_path):
    p = tmp_path / "imgs.npz"
    np.savez(p, x=np.ones((4, 5, 5), np.uint8) * 255, y=np.array([0, 1, 0, 1]))
    kind = get_kind("image")
    d = kind.preprocess(kind.load_source(str(p)))
    assert d.x.shape == (4, 1, 5, 5) and d.x.max() == 1.0


@pytest.mark.parametrize("arrays,match", [
    ({"x": np.zeros((3, 8, 8))}, r"missing arrays \['y'\]"),
    ({"x": np.zeros((3, 8)), "y": np.zeros(3, int)}, "must be"),
    ({"x": np.zeros((3, 8, 8)), "y": np.zeros(3)}, "integer labels"),
])
def test_bad_npz_sources_are_named(tmp_path, arrays, match):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(ValueError, match=match):
        get_kind("image").load_source(str(p))


def test_unknown_kind_and_missing_file():
    with pytest.raises(ValueError, match="unknown data kind 'video'"):
        get_kind("video")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_kind("image").load_source("nope.npz")
