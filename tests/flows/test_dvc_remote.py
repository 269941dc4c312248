"""A team's shared DVC remote on a real S3-compatible server (moto's, on 127.0.0.1): `set_remote` writes the endpoint
but no credentials and pushes what is tracked, `data add` pushes what it adds, a git clone gets the data back with
`pull_missing` byte for byte, a pull from a remote without the data names the file and the remote, and a bad URL
changes nothing. No pipeline run: pull_missing is what `validate` calls first."""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flows.data import dvc
from flows.data import remote as dvc_remote
from flows.data.add import add_dataset
from flows.data.dvc import DvcError

pytestmark = pytest.mark.integration  # a local S3 server, git and DVC in subprocesses
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint(s3_server):
    """moto's S3 server for the whole module (it takes seconds to start); its endpoint URL."""
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3(s3_endpoint, monkeypatch, request, tmp_path):
    """Dummy credentials in the environment (what DVC and boto read) and a new bucket for this test:
    (endpoint, bucket, boto3 client)."""
    import boto3

    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    # nothing of this machine's AWS setup (empty files: botocore refuses a config path that is not a file), and no
    # proxy between DVC and 127.0.0.1
    for var in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        (tmp_path / var).write_text("")
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    bucket = "team-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=bucket)
    return s3_endpoint, bucket, client


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=root, check=True, capture_output=True
    )


def _project(root: Path) -> Path:
    """A git + DVC project as `edgekd data add` finds one (as in test_data_add)."""
    root.mkdir()
    _git(root, "init", "-q")
    shutil.copy(Path(__file__).resolve().parents[2] / "params.yaml", root)
    (root / "data" / "external").mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    return root


def _objects(client, bucket: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def _add_mine(root: Path):
    np.savez(root / "data" / "external" / "mine.npz", x=np.random.rand(30, 6, 6) * 255, y=np.arange(30) % 3)
    return add_dataset(root, "mine", "image", "mine.npz", "data/external", None, {})


def test_set_remote_writes_the_endpoint_not_the_credentials_and_pushes_what_is_tracked(tmp_path, s3):
    endpoint, bucket, client = s3
    root = _project(tmp_path / "p")
    (root / "data" / "external" / "notes.txt").write_text("tracked before the remote was set\n")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data/external/notes.txt"], cwd=root, check=True)

    out = dvc_remote.set_remote(root, f"s3://{bucket}/dvc", endpoint_url=endpoint)

    assert out == dvc_remote.RemoteSet("team", f"s3://{bucket}/dvc", endpoint, "1 file pushed")
    config = (root / ".dvc" / "config").read_text()
    assert "remote = team" in config and f"url = s3://{bucket}/dvc" in config and f"endpointurl = {endpoint}" in config
    assert "testing" not in config and not (root / ".dvc" / "config.local").exists()
    keys = _objects(client, bucket)
    assert len(keys) == 1 and keys[0].startswith("dvc/files/md5/")  # the write check left nothing behind


def test_added_data_is_pushed_and_a_clone_pulls_it_back_byte_for_byte(tmp_path, s3, monkeypatch):
    endpoint, bucket, client = s3
    root = _project(tmp_path / "p")
    dvc_remote.set_remote(root, f"s3://{bucket}/dvc", endpoint_url=endpoint)

    section = _add_mine(root)

    assert section.pushed and section.push == f"pushed to DVC remote 'team' (s3://{bucket}/dvc): 1 file pushed"
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "mine")
    subprocess.run(["git", "clone", "-q", str(root), str(tmp_path / "clone")], check=True)
    clone = tmp_path / "clone"
    assert (clone / "data" / "external" / "mine.npz.dvc").is_file()
    assert not (clone / "data" / "external" / "mine.npz").exists()

    assert dvc_remote.pull_missing(clone, "mine") == ["data/external/mine.npz.dvc"]

    original = (root / "data" / "external" / "mine.npz").read_bytes()
    assert (clone / "data" / "external" / "mine.npz").read_bytes() == original

    def no_dvc(*args, **kwargs):
        raise AssertionError(f"a DVC call with nothing missing: {args}")

    monkeypatch.setattr(dvc.subprocess, "run", no_dvc)
    assert dvc_remote.pull_missing(clone, "mine") == []  # the fast path of every run: no DVC at all
    assert dvc_remote.pull_missing(clone, "digits") == []  # a built-in dataset of the same data root


def test_a_pull_from_a_remote_without_the_data_names_the_file_and_the_remote(tmp_path, s3):
    endpoint, bucket, client = s3
    root = _project(tmp_path / "p")
    dvc_remote.set_remote(root, f"s3://{bucket}/dvc", endpoint_url=endpoint)
    _add_mine(root)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "mine")
    subprocess.run(["git", "clone", "-q", str(root), str(tmp_path / "clone")], check=True)
    for key in _objects(client, bucket):  # the team's bucket emptied (or the data never pushed)
        client.delete_object(Bucket=bucket, Key=key)

    with pytest.raises(DvcError) as e:
        dvc_remote.pull_missing(tmp_path / "clone", "mine")

    msg = str(e.value)
    assert "data/external/mine.npz" in msg and f"DVC remote 'team' (s3://{bucket}/dvc)" in msg
    assert "never pushed" in msg and "AWS_ACCESS_KEY_ID" in msg
    assert e.value.data_error == msg  # what `edgekd run` prints, without a traceback
    assert not (tmp_path / "clone" / "data" / "external" / "mine.npz").exists()


def test_a_failed_push_still_adds_the_dataset_and_says_so(tmp_path, s3):
    endpoint, _, _ = s3
    root = _project(tmp_path / "p")
    for args in (["add", "-d", "team", "s3://no-such-bucket/dvc"], ["modify", "team", "endpointurl", endpoint]):
        subprocess.run([sys.executable, "-m", "dvc", "remote", *args], cwd=root, check=True, capture_output=True)

    section = _add_mine(root)

    assert not section.pushed
    assert section.push.startswith("not pushed: `dvc push` to remote 'team' (s3://no-such-bucket/dvc) failed")
    assert "bucket exists" in section.push and "run `dvc push` when the remote is reachable" in section.push
    assert "mine" in (root / "params.yaml").read_text() and (root / "data" / "external" / "mine.npz.dvc").is_file()


def test_set_remote_to_a_missing_bucket_says_what_to_check(tmp_path, s3):
    endpoint, _, _ = s3
    root = _project(tmp_path / "p")
    with pytest.raises(
        dvc_remote.RemoteError,
        match=r"(?s)'team' \(s3://no-such-bucket/dvc at http.*cannot be "
        r"written: .*bucket.*credentials",
    ):
        dvc_remote.set_remote(root, "s3://no-such-bucket/dvc", endpoint_url=endpoint)


def test_the_cli_command_sets_the_remote_and_reports_errors(tmp_path, s3, capsys):
    endpoint, bucket, _ = s3
    root = _project(tmp_path / "p")
    p = argparse.ArgumentParser()
    p.add_argument("--project-dir")
    from flows.cli import data

    data.add_parsers(p.add_subparsers())

    args = p.parse_args(["--project-dir", str(root), "data", "remote", f"s3://{bucket}/d", "--endpoint-url", endpoint])
    assert args.fn(args) == 0
    out = capsys.readouterr().out
    assert f"default DVC remote 'team': s3://{bucket}/d at {endpoint}" in out and "pushed" in out

    args = p.parse_args(["--project-dir", str(root), "data", "remote", "ftp://host/d", "--name", "other"])
    assert args.fn(args) == 1
    assert "error: remote URL 'ftp://host/d': unsupported scheme 'ftp'" in capsys.readouterr().err


def test_a_bad_url_is_refused_and_the_config_is_unchanged(tmp_path):
    root = _project(tmp_path / "p")
    before = (root / ".dvc" / "config").read_bytes()
    for url, endpoint, message in [
        ("ftp://host/dvc", None, r"remote URL 'ftp://host/dvc': unsupported scheme 'ftp'; use s3://BUCKET/PREFIX"),
        ("s3:/bucket/dvc", None, r"remote URL 's3:/bucket/dvc' names no bucket"),
        ("s3://", None, r"remote URL 's3://' names no bucket"),
        ("", None, r"remote URL '' is empty"),
        ("s3://bucket/dvc", "127.0.0.1:9000", r"endpoint URL '127.0.0.1:9000': expected http\(s\)://HOST"),
        ("/mnt/share/dvc", "http://127.0.0.1:9000", r"endpoint URL .* is for s3:// remotes, not '/mnt/share/dvc'"),
    ]:
        with pytest.raises(ValueError, match=message):
            dvc_remote.set_remote(root, url, endpoint_url=endpoint)
        assert (root / ".dvc" / "config").read_bytes() == before


def test_without_a_remote_a_missing_file_comes_from_the_local_cache_or_is_named(tmp_path):
    root = _project(tmp_path / "p")
    csv = root / "data" / "external" / "a.csv"
    csv.write_text("x,label\n1,a\n2,b\n")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data/external/a.csv"], cwd=root, check=True)
    csv.unlink()
    # digits reads the same data root: a file missing there changes its ingest stage's input
    assert dvc_remote.pull_missing(root, "digits") == ["data/external/a.csv.dvc"]
    assert csv.read_text() == "x,label\n1,a\n2,b\n"

    csv.unlink()
    shutil.rmtree(root / ".dvc" / "cache")
    with pytest.raises(
        DvcError,
        match=r"(?s)missing here: data/external/a.csv .*not in the local DVC cache, and no "
        r"default DVC remote is set",
    ):
        dvc_remote.pull_missing(root, "digits")


def test_a_pull_while_another_dvc_process_holds_the_lock_is_a_timeout(tmp_path):
    from dvc.lock import make_lock

    root = _project(tmp_path / "p")
    (root / "data" / "external" / "a.csv").write_text("x,label\n1,a\n2,b\n")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data/external/a.csv"], cwd=root, check=True)
    (root / "data" / "external" / "a.csv").unlink()
    lock = make_lock(str(root / ".dvc" / "tmp" / "lock"), tmp_dir=str(root / ".dvc" / "tmp"))
    lock.lock()
    try:
        with pytest.raises(TimeoutError, match="locked by another process"):  # `edgekd run`: try again later
            dvc_remote.pull_missing(root, "digits")
    finally:
        lock.unlock()
