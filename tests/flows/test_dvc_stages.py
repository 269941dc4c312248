"""The DVC data stages as functions on a throwaway project: an unlabelled pool is ingested beside the raw data,
and prepare keeps only the pool samples that equal no labelled sample."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from components.config import load_config
from components.data import DataError
from components.data.base import content_hashes
from flows.data import layout, stages

pytestmark = pytest.mark.unit

SECTION = {
    "kind": "image",
    "root": "data/external",
    "source": "labelled.npz",
    "classes": ["0", "1"],
    "val_fraction": 0.25,
    "test_fraction": 0.25,
}
IMAGES = np.arange(40, dtype=np.uint8)[:, None, None] * 5 * np.ones((1, 4, 4), np.uint8)  # 40 distinct images


def _config(root, **section):
    (root / "params.yaml").write_text(yaml.safe_dump({"dataset": "toy", "datasets": {"toy": SECTION | section}}))
    return load_config(root / "params.yaml", "toy")


def _stages(root, cfg):
    stages.ingest(root, cfg)
    stages.prepare(root, cfg)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "data" / "external" / "pool").mkdir(parents=True)
    np.savez(tmp_path / "data" / "external" / "labelled.npz", x=IMAGES, y=np.arange(40) % 2)
    return tmp_path


def test_prepare_drops_pool_samples_equal_to_labelled_ones_and_keeps_the_rest(project):
    _stages(project, _config(project))  # no pool yet: which image went to which split
    splits = layout.load_splits(project, "toy")
    by_hash = dict(zip(content_hashes(IMAGES.astype(np.float32)), IMAGES))
    new_a, new_b = np.full((4, 4), 201, np.uint8), np.full((4, 4), 7, np.uint8)  # 7 is no multiple of 5
    pool = {
        "1_test.png": by_hash[splits["test"].meta["hash"][0]],
        "2_new_a.png": new_a,
        "3_train.png": by_hash[splits["train"].meta["hash"][0]],
        "4_new_b.png": new_b,
        "5_new_a_again.png": new_a,
        "6_val.png": by_hash[splits["val"].meta["hash"][0]],
    }
    for name, image in pool.items():
        Image.fromarray(image).save(project / "data" / "external" / "pool" / name)
    cfg = _config(project, unlabelled="pool")

    _stages(project, cfg)

    summary = json.loads((project / "data" / "prepared" / "toy" / "summary.json").read_text())
    assert (summary["unlabelled"], summary["unlabelled_dropped"]) == (2, 4)
    assert summary["counts"] == {n: len(d) for n, d in splits.items()}  # the labelled splits are unchanged
    x = layout.load_pool(project, "toy")
    assert x.shape == (2, 1, 4, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0, 0], [201 / 255, 7 / 255], rtol=1e-6)
    assert layout.load_pool_hashes(project, "toy").tolist() == content_hashes(
        [new_a.astype(np.float32), new_b.astype(np.float32)]
    )
    raw_pool = layout.load_raw_pool(project, cfg)
    assert len(raw_pool) == 6 and raw_pool.labels.tolist() == [""] * 6
    assert raw_pool.meta["file"].tolist() == sorted(pool) and raw_pool.info == {"scale": 255.0, "unlabelled": True}


def test_a_pool_removed_from_params_leaves_no_file_behind(project):
    Image.fromarray(np.full((4, 4), 3, np.uint8)).save(project / "data" / "external" / "pool" / "a.png")
    _stages(project, _config(project, unlabelled="pool"))
    assert (project / "data" / "raw" / "toy" / "unlabelled.npz").is_file()
    assert (project / "data" / "prepared" / "toy" / "unlabelled.npz").is_file()
    cfg = _config(project)

    _stages(project, cfg)

    assert not (project / "data" / "raw" / "toy" / "unlabelled.npz").exists()
    assert layout.load_pool(project, "toy") is None and layout.load_raw_pool(project, cfg) is None
    assert "unlabelled" not in json.loads((project / "data" / "prepared" / "toy" / "summary.json").read_text())


@pytest.mark.parametrize(
    "unlabelled,match",
    [
        ("../secret", "data.unlabelled '../secret' resolves to .*, outside the data root"),
        ("absent", "data.unlabelled 'absent': .* does not exist"),
        (".", "unlabelled pool .* overlaps the labelled source"),
        ("pool", r"pool/bad\.png: unreadable or corrupt image"),
    ],
)
def test_a_bad_pool_fails_ingest_before_anything_is_written(project, unlabelled, match):
    (project / "data" / "secret").mkdir()
    (project / "data" / "external" / "pool" / "bad.png").write_bytes(b"\x89PNG garbage")
    cfg = _config(project, unlabelled=unlabelled)

    with pytest.raises(DataError, match=match):
        stages.ingest(project, cfg)

    assert not (project / "data" / "raw").exists()


def test_the_committed_dvc_lock_matches_the_stage_code():
    """A change to a stage's code without `dvc repro` leaves dvc.lock stale, and every fresh clone's first run
    re-runs the stages and dirties the lock."""
    import hashlib
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    code = [
        (name, dep) for name, stage in lock["stages"].items() for dep in stage["deps"] if dep["path"].endswith(".py")
    ]
    assert code, "dvc.lock lists no code dependency"
    stale = [
        f"{name}: {dep['path']}"
        for name, dep in code
        if hashlib.md5((repo / dep["path"]).read_bytes()).hexdigest() != dep["md5"]
    ]
    assert not stale, f"dvc.lock is stale, run `dvc repro`: {stale}"
