import numpy as np
import pytest
from PIL import Image

from components.config import DIGITS, DataConfig
from components.data import DataError, RawData, get_kind
from components.data.base import content_hashes, encode_labels, load_raw, prepare_splits, save_raw, split_indices
from components.data.options import parse
from components.preprocess import transform

pytestmark = pytest.mark.unit

KIND = get_kind("image")


def test_digits_source_and_preprocessing(digits_spec):
    raw = KIND.load("sklearn:digits", parse(KIND.name, {}))
    assert raw.samples.shape == (1797, 8, 8) and raw.info["scale"] == 16.0 and raw.labels[0] == "0"
    x = transform(digits_spec, raw.samples)
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    assert digits_spec["input_shape"] == [1, 8, 8] and digits_spec["classes"] == [str(i) for i in range(10)]


def test_split_is_stratified_disjoint_and_seeded(digits_splits):
    again, _, dropped = prepare_splits(
        KIND, KIND.load("sklearn:digits", parse(KIND.name, {})), DataConfig(name="digits", **DIGITS)
    )
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


def test_a_test_split_given_by_the_source_is_kept_and_val_drawn_from_the_rest():
    split = np.where(np.arange(100) < 20, "test", "")
    raw = RawData(np.arange(100, dtype=np.float32)[:, None], (np.arange(100) % 2).astype(str), split=split)
    idx, _ = split_indices(raw, ["0", "1"], 0.25, 0.2, 0)
    assert idx["test"].tolist() == list(range(20))
    assert len(idx["val"]) == 20 and set(idx["train"]) | set(idx["val"]) == set(range(20, 100))


def test_raw_round_trip_without_pickles(tmp_path):
    raw = KIND.load("sklearn:digits", parse(KIND.name, {})).subset(np.arange(10))

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
    raw = KIND.load(str(p), parse(KIND.name, {}))
    assert raw.info["scale"] == 255.0 and raw.labels.tolist() == ["0", "1", "0", "1"]
    assert transform(KIND.fit(raw, parse(KIND.name, {})), raw.samples).max() == 1.0


def test_png_class_folders(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.fromarray(np.full((6, 5), 40 * i, np.uint8)).save(tmp_path / label / f"{i}.png")
    raw = KIND.load(str(tmp_path), parse(KIND.name, {}))
    assert raw.samples.shape == (6, 6, 5) and sorted(set(raw.labels)) == ["cat", "dog"]
    assert raw.meta["file"][0] == "cat/0.png"


@pytest.mark.parametrize(
    "arrays,match",
    [
        ({"x": np.zeros((3, 8, 8))}, r"missing arrays \['y'\]"),
        ({"x": np.zeros((3, 8)), "y": np.zeros(3, int)}, "must be"),
        ({"x": np.zeros((3, 8, 8)), "y": np.zeros(2, int)}, "3 images but y has 2 labels"),
    ],
)
def test_bad_npz_sources_are_named(tmp_path, arrays, match):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError, match=match):
        KIND.load(str(p), parse(KIND.name, {}))


def _medmnist(path, sizes=(6, 2, 3), shape=(5, 5), label_shape=lambda n: (n, 1)):
    """A MedMNIST-style .npz: image i of split s is filled with 10 * (split number) + i, labels alternate."""
    arrays = {}
    for k, (s, n) in enumerate(zip(("train", "val", "test"), sizes)):
        arrays[f"{s}_images"] = (10 * k + np.arange(n, dtype=np.uint8)).reshape(n, *[1] * len(shape)) * np.ones(
            shape, np.uint8
        )
        arrays[f"{s}_labels"] = (np.arange(n) % 2).reshape(label_shape(n))
    np.savez(path, **arrays)
    return arrays


@pytest.mark.parametrize("label_shape", [lambda n: (n,), lambda n: (n, 1)])
def test_medmnist_npz_keeps_its_splits_through_prepare(tmp_path, label_shape):
    arrays = _medmnist(tmp_path / "m.npz", label_shape=label_shape)

    raw = KIND.load(str(tmp_path / "m.npz"), parse(KIND.name, {}))
    splits, spec, dropped = prepare_splits(
        KIND, raw, DataConfig(name="toy", kind="image", root=".", source="toy.npz", classes=["0", "1"])
    )

    assert raw.split.tolist() == ["train"] * 6 + ["val"] * 2 + ["test"] * 3 and raw.info["scale"] == 255.0
    assert raw.labels.tolist() == ["0", "1", "0", "1", "0", "1", "0", "1", "0", "1", "0"]
    assert dropped == 0 and spec["input_shape"] == [1, 5, 5]
    for name in ("train", "val", "test"):  # each prepared split is the file's split, image for image
        assert np.array_equal(splits[name].x[:, 0] * 255, arrays[f"{name}_images"].astype(np.float32))
        assert splits[name].y.tolist() == arrays[f"{name}_labels"].ravel().tolist()


def test_medmnist_rgb_is_channels_last_in_the_file_and_first_in_the_kind(tmp_path):
    arrays = _medmnist(tmp_path / "m.npz", shape=(4, 5, 3))
    arrays["train_images"][0, 1, 2] = [7, 8, 9]
    np.savez(tmp_path / "m.npz", **arrays)

    raw = KIND.load(str(tmp_path / "m.npz"), parse(KIND.name, {}))

    assert raw.samples.shape == (11, 3, 4, 5) and raw.samples[0, :, 1, 2].tolist() == [7, 8, 9]
    assert KIND.fit(raw, parse(KIND.name, {}))["input_shape"] == [3, 4, 5]


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda a: a.pop("val_labels"), r"MedMNIST's layout without \['val_labels'\]"),
        (lambda a: a.update(test_labels=np.zeros((3, 14), int)), r"test_labels of shape \(3, 14\); expected one label"),
        (lambda a: a.update(val_images=np.zeros((2, 6, 6), np.uint8)), r"val_images of shape \(2, 6, 6\)"),
    ],
)
def test_bad_medmnist_files_are_named(tmp_path, change, match):
    arrays = _medmnist(tmp_path / "m.npz")
    change(arrays)
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(DataError, match=match):
        KIND.load(str(tmp_path / "m.npz"), parse(KIND.name, {}))


def test_png_folders_in_train_val_test_keep_their_splits(tmp_path):
    src, value = tmp_path / "src", iter(range(0, 256, 10))  # every image distinct, so none is dropped as a duplicate
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for label in ("cat", "dog"):
            (src / split / label).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((6, 5), next(value), np.uint8)).save(src / split / label / f"{i}.png")

    raw = KIND.load(str(src), parse(KIND.name, {}))
    save_raw(KIND, raw, tmp_path / "raw", _pool_write)
    idx, dropped = split_indices(load_raw(KIND, tmp_path / "raw"), ["cat", "dog"], 0.15, 0.2, 0)

    assert raw.meta["file"][0] == "test/cat/0.png" and raw.labels[0] == "cat"
    assert dropped == 0 and {s: len(i) for s, i in idx.items()} == {"train": 8, "val": 4, "test": 4}
    for s, i in idx.items():
        assert all(f.startswith(f"{s}/") for f in raw.meta["file"][i])
    (src / "val").rename(src / "other")
    with pytest.raises(DataError, match=r"sub-folders \['other', 'test', 'train'\]; expected exactly train/"):
        KIND.load(str(src), parse(KIND.name, {}))


def test_train_and_test_folders_only_get_val_from_train_and_a_subset_per_class(tmp_path):
    """CIFAR-10's layout: train/ and test/ without val/. `train_per_class` keeps the first N train images of each
    class by file name; val is drawn from them, stratified and seeded; test is the source's, whole."""
    src, value = tmp_path / "src", iter(range(0, 256 * 3, 3))
    for split, n in (("train", 10), ("test", 3)):
        for label in ("cat", "dog"):
            (src / split / label).mkdir(parents=True)
            for i in range(n):
                v = next(value)
                image = np.stack([np.full((4, 4), v % 256, np.uint8), np.full((4, 4), v // 256, np.uint8)] * 2, -1)
                Image.fromarray(image[..., :3]).save(src / split / label / f"{i:04d}.png")
    raw = KIND.load(str(src), parse(KIND.name, {"mode": "RGB", "train_per_class": 8}))
    assert raw.samples.shape == (16 + 6, 3, 4, 4) and raw.samples.dtype == np.uint8  # the files' own 8 bits
    train_files = [f for f in raw.meta["file"] if f.startswith("train/")]
    assert sorted(train_files) == [f"train/{c}/{i:04d}.png" for c in ("cat", "dog") for i in range(8)]

    idx, _ = split_indices(raw, ["cat", "dog"], 0.25, 0.2, 0)
    again, _ = split_indices(raw, ["cat", "dog"], 0.25, 0.2, 0)
    assert {s: len(i) for s, i in idx.items()} == {"train": 12, "val": 4, "test": 6}
    assert all(raw.meta["file"][i].startswith("train/") for i in idx["val"])
    assert sorted(raw.labels[idx["val"]]) == ["cat", "cat", "dog", "dog"]  # stratified
    assert all(np.array_equal(idx[s], again[s]) for s in idx)  # seeded
    assert all(raw.meta["file"][i].startswith("test/") for i in idx["test"])


def test_mixed_image_sizes_and_corrupt_files_name_the_file(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "a" / "0.png")
    Image.fromarray(np.zeros((7, 6), np.uint8)).save(tmp_path / "a" / "1.png")
    with pytest.raises(DataError, match=r"a/1.png: image size \(7, 6\) differs"):
        KIND.load(str(tmp_path), parse(KIND.name, {}))
    (tmp_path / "a" / "1.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=r"a/1.png: unreadable or corrupt image"):
        KIND.load(str(tmp_path), parse(KIND.name, {}))


def test_unknown_labels_and_kind():
    with pytest.raises(DataError, match=r"labels \['7'\] are not in the configured classes"):
        encode_labels(np.array(["0", "7"]), ["0", "1"])
    with pytest.raises(ValueError, match="unknown data kind 'video'"):
        get_kind("video")


# --- unlabelled pool -------------------------------------------------------------------------------------------


def _pool_write(path, arrays):
    assert all(a.dtype != object for a in arrays.values())  # np.load(allow_pickle=False) must read it back
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def test_unlabelled_npz_needs_only_x_and_ignores_y(tmp_path):
    p = tmp_path / "pool.npz"
    np.savez(p, x=np.full((3, 5, 5), 51, np.uint8), y=np.array([7, 8, 9]))

    pool = KIND.load_unlabelled(str(p), parse(KIND.name, {}))

    assert pool.labels.tolist() == ["", "", ""] and pool.labels.dtype.kind == "U"
    assert pool.samples.shape == (3, 5, 5) and pool.samples.dtype == np.float32
    assert pool.info == {"scale": 255.0, "unlabelled": True}
    assert transform(KIND.fit(pool, parse(KIND.name, {})), pool.samples).max() == pytest.approx(0.2)  # 51 / 255


def test_unlabelled_png_folder_flat_and_nested_names_ignored(tmp_path):
    (tmp_path / "pool" / "batch2" / "deeper").mkdir(parents=True)
    Image.fromarray(np.full((6, 5), 10, np.uint8)).save(tmp_path / "pool" / "a.png")
    Image.fromarray(np.full((6, 5), 20, np.uint8)).save(tmp_path / "pool" / "batch2" / "b.jpg")
    Image.fromarray(np.full((6, 5), 30, np.uint8)).save(tmp_path / "pool" / "batch2" / "deeper" / "c.PNG")
    (tmp_path / "pool" / "notes.txt").write_text("not an image")

    pool = KIND.load_unlabelled(str(tmp_path / "pool"), parse(KIND.name, {}))

    assert pool.meta["file"].tolist() == ["a.png", "batch2/b.jpg", "batch2/deeper/c.PNG"]
    assert pool.samples.shape == (3, 6, 5) and pool.labels.tolist() == ["", "", ""]
    assert pool.samples[0, 0, 0] == 10 and pool.samples[2, 0, 0] == 30


def test_unlabelled_pool_takes_the_labelled_scale_and_must_share_its_shape(tmp_path):
    labelled = RawData(np.zeros((2, 4, 4), np.float32), np.array(["0", "1"]), {}, {"scale": 16.0})
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(tmp_path / "white.png")
    np.savez(tmp_path / "small.npz", x=np.full((1, 4, 4), 8.0))  # no scale: already in the labelled units
    np.savez(tmp_path / "big.npz", x=np.zeros((1, 5, 4)))

    png = KIND.load_unlabelled(str(tmp_path), parse(KIND.name, {}), like=labelled)
    npz = KIND.load_unlabelled(str(tmp_path / "small.npz"), parse(KIND.name, {}), like=labelled)

    assert png.info["scale"] == 16.0 and png.samples.max() == 16.0  # 255 of 255 is 16 of 16
    assert npz.info["scale"] == 16.0 and npz.samples.max() == 8.0
    with pytest.raises(
        DataError,
        match=r"big\.npz: unlabelled images of shape \(5, 4\) differ from the labelled "
        r"images' \(4, 4\)",
    ):
        KIND.load_unlabelled(str(tmp_path / "big.npz"), parse(KIND.name, {}), like=labelled)


@pytest.mark.parametrize(
    "setup,match",
    [
        ("corrupt_npz", r"pool\.npz: not a readable \.npz"),
        ("no_x", r"pool\.npz: missing arrays \['x'\]"),
        ("corrupt_png", r"pool/sub/1\.png: unreadable or corrupt image"),
        ("mixed_png", r"pool/sub/1\.png: image size \(7, 6\) differs"),
        ("empty_folder", r"pool: no PNG/JPEG files in the folder or its sub-folders"),
        ("empty_npz", r"pool\.npz: no samples in the unlabelled pool"),
        ("other", r"expected an \.npz file or a folder"),
    ],
)
def test_bad_unlabelled_image_pools_name_the_file(tmp_path, setup, match):
    (tmp_path / "pool" / "sub").mkdir(parents=True)
    source = tmp_path / ("pool.npz" if "npz" in setup or setup == "no_x" else "pool")
    if setup == "corrupt_npz":
        source.write_bytes(b"PK\x03\x04 truncated")
    elif setup == "no_x":
        np.savez(source, images=np.zeros((2, 4, 4)))
    elif setup == "empty_npz":
        np.savez(source, x=np.zeros((0, 4, 4)))
    elif setup in ("corrupt_png", "mixed_png"):
        Image.fromarray(np.zeros((6, 6), np.uint8)).save(source / "sub" / "0.png")
        if setup == "corrupt_png":
            (source / "sub" / "1.png").write_bytes(b"\x89PNG garbage")
        else:
            Image.fromarray(np.zeros((7, 6), np.uint8)).save(source / "sub" / "1.png")
    elif setup == "other":
        source = tmp_path / "pool.txt"
        source.write_text("x")

    with pytest.raises(DataError, match=match):
        KIND.load_unlabelled(str(source), parse(KIND.name, {}))


def test_unlabelled_round_trip_keeps_samples_meta_and_info(tmp_path):
    from components.data.base import load_unlabelled, save_unlabelled

    Image.fromarray(np.arange(20, dtype=np.uint8).reshape(4, 5)).save(tmp_path / "a.png")
    pool = KIND.load_unlabelled(str(tmp_path), parse(KIND.name, {}))

    save_unlabelled(KIND, pool, tmp_path / "raw", _pool_write)
    back = load_unlabelled(KIND, tmp_path / "raw")

    assert np.array_equal(back.samples, pool.samples) and back.labels.tolist() == [""]
    assert back.meta["file"].tolist() == ["a.png"] and back.info == {"scale": 255.0, "unlabelled": True}
    assert load_unlabelled(KIND, tmp_path / "nothing here") is None


def test_pool_samples_equal_to_labelled_or_earlier_pool_samples_are_dropped():
    from components.data.base import prepare_unlabelled

    x = np.arange(60, dtype=np.float32).reshape(60, 1, 1) * np.ones((1, 2, 2), np.float32)  # 60 distinct images
    raw = RawData(x, (np.arange(60) % 2).astype(str), {}, {"scale": 100.0})
    splits, spec, _ = prepare_splits(
        KIND,
        raw,
        DataConfig(
            name="toy",
            kind="image",
            root=".",
            source="toy.npz",
            classes=["0", "1"],
            val_fraction=0.25,
            test_fraction=0.25,
        ),
    )
    test_hash, train_hash = splits["test"].meta["hash"][0], splits["train"].meta["hash"][0]
    by_hash = dict(zip(content_hashes(x), x))
    new = np.full((2, 2), 99.0, np.float32)
    pool = RawData(
        np.stack([by_hash[test_hash], new, by_hash[train_hash], new, new * 0 + 98]),
        np.full(5, "", dtype=str),
        {},
        {"scale": 100.0, "unlabelled": True},
    )

    px, hashes, dropped = prepare_unlabelled(KIND, pool, spec, splits, parse(KIND.name, {}))

    assert dropped == 3  # the test sample, the train sample, the second copy of `new`
    assert hashes.tolist() == content_hashes([new, new * 0 + 98])
    np.testing.assert_allclose(px[:, 0, 0, 0], [0.99, 0.98], rtol=1e-6)
    assert px.shape == (2, 1, 2, 2) and px.dtype == np.float32


def test_a_pool_of_labelled_samples_only_prepares_to_an_empty_input_array():
    from components.data.base import prepare_unlabelled

    x = np.arange(40, dtype=np.float32).reshape(40, 1, 1) * np.ones((1, 3, 3), np.float32)
    raw = RawData(x, (np.arange(40) % 2).astype(str), {}, {"scale": 40.0})
    splits, spec, _ = prepare_splits(
        KIND, raw, DataConfig(name="toy", kind="image", root=".", source="toy.npz", classes=["0", "1"])
    )
    pool = RawData(x[:5], np.full(5, "", dtype=str), {}, {"scale": 40.0, "unlabelled": True})

    px, hashes, dropped = prepare_unlabelled(KIND, pool, spec, splits, parse(KIND.name, {}))

    assert (px.shape, px.dtype, len(hashes), dropped) == ((0, 1, 3, 3), np.float32, 0, 5)
