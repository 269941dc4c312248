import numpy as np
import pytest
from PIL import Image

from components.config import DataConfig
from components.data import DataError, RawData, get_kind
from components.data.base import content_hashes, encode_labels, load_raw, prepare_splits, save_raw, split_indices
from components.preprocess import transform

KIND = get_kind("image")


def test_digits_source_and_preprocessing(digits_spec):
    raw = KIND.load("sklearn:digits", {})
    assert raw.samples.shape == (1797, 8, 8) and raw.info["scale"] == 16.0 and raw.labels[0] == "0"
    x = transform(digits_spec, raw.samples)
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    assert digits_spec["input_shape"] == [1, 8, 8] and digits_spec["classes"] == [str(i) for i in range(10)]


def test_split_is_stratified_disjoint_and_seeded(digits_splits):
    again, _, dropped = prepare_splits(KIND, KIND.load("sklearn:digits", {}), DataConfig())
    assert dropped == 0
    assert sum(len(s) for s in digits_splits.values()) == 1797
    assert len(digits_splits["test"]) == 360
    assert np.array_equal(again["test"].y, digits_splits["test"].y)
    hashes = {n: set(s.meta["hash"]) for n, s in digits_splits.items()}
    assert not hashes["train"] & hashes["test"] and not hashes["train"] & hashes["val"]
    all_y = np.concatenate([s.y for s in digits_splits.values()])
    fractions = np.bincount(digits_splits["test"].y) / np.bincount(all_y)
    assert np.all(np.abs(fractions - 0.2) < 0.02)


def test_duplicates_are_dropped_before_splitting():
    x = np.repeat(np.arange(40, dtype=np.float32)[:, None], 2, axis=0)  # every sample twice
    raw = RawData(x, np.repeat(np.arange(40) % 2, 2).astype(str))
    idx, dropped = split_indices(raw, ["0", "1"], 0.25, 0.25, 0)
    assert dropped == 40
    assert sum(len(i) for i in idx.values()) == 40
    assert len(set(content_hashes(x[np.concatenate(list(idx.values()))]))) == 40


def test_conventional_test_mask_is_respected():
    raw = RawData(np.arange(100, dtype=np.float32)[:, None], (np.arange(100) % 2).astype(str))
    mask = np.arange(100) < 20
    idx, _ = split_indices(raw, ["0", "1"], 0.25, 0.2, 0, mask)
    assert idx["test"].tolist() == list(range(20))
    assert set(idx["train"]) | set(idx["val"]) == set(range(20, 100))


def test_raw_round_trip_without_pickles(tmp_path):
    raw = KIND.load("sklearn:digits", {}).subset(np.arange(10))

    def write(path, arrays):
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)

    save_raw(KIND, raw, tmp_path, write)
    back = load_raw(KIND, tmp_path)
    assert np.array_equal(back.samples, raw.samples) and back.labels.tolist() == raw.labels.tolist()
    assert back.info == raw.info


def test_npz_source(tmp_path):
    p = tmp_path / "imgs.npz"
    np.savez(p, x=np.ones((4, 5, 5), np.uint8) * 255, y=np.array([0, 1, 0, 1]))
    raw = KIND.load(str(p), {})
    assert raw.info["scale"] == 255.0 and raw.labels.tolist() == ["0", "1", "0", "1"]
    assert transform(KIND.fit(raw, {}), raw.samples).max() == 1.0


def test_png_class_folders(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.fromarray(np.full((6, 5), 40 * i, np.uint8)).save(tmp_path / label / f"{i}.png")
    raw = KIND.load(str(tmp_path), {})
    assert raw.samples.shape == (6, 6, 5) and sorted(set(raw.labels)) == ["cat", "dog"]
    assert raw.meta["file"][0] == "cat/0.png"


@pytest.mark.parametrize("arrays,match", [
    ({"x": np.zeros((3, 8, 8))}, r"missing arrays \['y'\]"),
    ({"x": np.zeros((3, 8)), "y": np.zeros(3, int)}, "must be"),
    ({"x": np.zeros((3, 8, 8)), "y": np.zeros(2, int)}, "3 images but y has 2 labels"),
])
def test_bad_npz_sources_are_named(tmp_path, arrays, match):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError, match=match):
        KIND.load(str(p), {})


def test_mixed_image_sizes_and_corrupt_files_name_the_file(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "a" / "0.png")
    Image.fromarray(np.zeros((7, 6), np.uint8)).save(tmp_path / "a" / "1.png")
    with pytest.raises(DataError, match=r"a/1.png: image size \(7, 6\) differs"):
        KIND.load(str(tmp_path), {})
    (tmp_path / "a" / "1.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=r"a/1.png: unreadable or corrupt image"):
        KIND.load(str(tmp_path), {})


def test_unknown_labels_and_kind():
    with pytest.raises(DataError, match=r"labels \['7'\] are not in the configured classes"):
        encode_labels(np.array(["0", "7"]), ["0", "1"])
    with pytest.raises(ValueError, match="unknown data kind 'video'"):
        get_kind("video")
