"""`edgekd reproduce` on a real git repository, DVC repo and MLflow store: a version rebuilt from its recorded
commit matches (artifact or test predictions) even after a later commit changed a training default; a tampered
data hash is named and nothing is registered or moved."""

import json
import shutil
import subprocess

import pytest
import yaml

pytestmark = pytest.mark.e2e


def git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def registry(c) -> list:
    return sorted(
        (str(v.version), sorted(v.aliases), v.tags.get("registration_complete"))
        for v in c.search_model_versions("name='digits'")
    )


@pytest.fixture
def project(tmp_path, served_project, small_params, repo):
    root = tmp_path / "project"
    root.mkdir()
    env = served_project(root, small_params())
    shutil.copy(repo / ".gitignore", root)
    git(root, "init", "-q")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "project")
    return root, env


def test_reproduce_rebuilds_the_recorded_commit_and_names_a_tampered_data_hash(project, edgekd):
    from mlflow import MlflowClient

    root, env = project
    with edgekd(root, env, root / "run.log", "run") as proc:
        assert proc.wait(timeout=600) == 0, (root / "run.log").read_text()[-3000:]
    first = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()

    # A later commit changes a training default: version 1 is still rebuilt from its own commit.
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["student"]["epochs"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am", "fewer student epochs")

    c = MlflowClient(env["MLFLOW_TRACKING_URI"])
    before = registry(c)
    log = root / "reproduce.log"
    with edgekd(root, env, log, "reproduce", "digits@1", "--json", str(root / "r.json")) as proc:
        assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    out = json.loads((root / "r.json").read_text())
    assert out["commit"] == first and out["identical"], out
    assert out["verdict"] in ("identical artifact", "identical test predictions"), out
    assert f"digits version 1 ({out['candidate']}, commit {first[:12]}): {out['verdict']}" in log.read_text()
    assert not subprocess.run(["git", "worktree", "list"], cwd=root, capture_output=True, text=True).stdout.count(
        "edgekd-reproduce"
    )  # the worktree is gone

    # A tampered record: the data hash. Named, exit 8, and the registry as it was.
    c.set_model_version_tag("digits", "1", "dataset_hash", "0" * 32)
    log = root / "tampered.log"
    with edgekd(root, env, log, "reproduce", "digits@1") as proc:
        assert proc.wait(timeout=600) == 8, log.read_text()[-4000:]
    text = log.read_text()
    assert f"records dataset_hash {'0' * 32}" in text and "prepares to" in text, text[-3000:]
    assert registry(c) == before
