"""The fingerprint behind `edgekd run`'s no-change answer: whatever decides a run's outcome changes it."""

import shutil

import pytest
import yaml

from components.config import load_config
from flows.pipelines.uptodate import fingerprint, up_to_date

pytestmark = pytest.mark.integration  # `dvc status` runs as a subprocess


@pytest.fixture
def project(tmp_path, repo):
    shutil.copy(repo / "params.yaml", tmp_path)
    shutil.copy(repo / "dvc.yaml", tmp_path)
    return tmp_path


def test_fingerprint_follows_config_overrides_and_the_datasets_lock_entries(project):
    root = project
    cfg = load_config(root / "params.yaml")
    base = fingerprint(root, cfg)
    assert fingerprint(root, load_config(root / "params.yaml")) == base
    assert fingerprint(root, load_config(root / "params.yaml", None, {"prune.ratio": 0.5})) != base
    lock = {
        "schema": "2.0",
        "stages": {
            "prepare@digits": {"outs": [{"path": "data/prepared/digits", "md5": "a"}]},
            "prepare@fsdd": {"outs": [{"path": "data/prepared/fsdd", "md5": "b"}]},
        },
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    locked = fingerprint(root, cfg)
    assert locked != base
    lock["stages"]["prepare@fsdd"]["outs"][0]["md5"] = "c"  # another dataset's data: not this run's business
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert fingerprint(root, cfg) == locked
    lock["stages"]["prepare@digits"]["outs"][0]["md5"] = "d"
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert fingerprint(root, cfg) != locked


def test_no_record_or_a_stale_one_means_the_pipeline_runs(project):
    root = project
    cfg = load_config(root / "params.yaml")
    assert up_to_date(root, cfg) is None
    (root / ".edgekd" / "runs").mkdir(parents=True)
    (root / ".edgekd" / "runs" / "digits.json").write_text('{"fingerprint": "stale"}')
    assert up_to_date(root, cfg) is None
