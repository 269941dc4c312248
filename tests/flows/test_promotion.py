"""The promotion lifecycle on a real MLflow registry (SQLite) with real ONNX files, through the `edgekd` CLI:
serialized promotions, tamper refusal, archived tags and the history. The versions are tiny registered ONNX
models with measured-looking metric tags, so no training is needed."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

pytestmark = pytest.mark.integration  # a real registry, commands in subprocesses

MODEL = "digits"


def measurement(latency):
    """A measured-looking candidate: scores on val and test, a latency, an artifact."""
    from components.candidate import Measurement
    from components.formats.base import Artifact
    from components.metrics import Scores

    scores = Scores(accuracy=0.99, macro_f1=0.99, precision={"a": 1.0}, recall={"a": 1.0}, confusion=[[1]])
    return Measurement(
        val=scores, test=scores, latency=latency(), artifact=Artifact(path="m", size_bytes=1000, sha256="x")
    )


def _onnx(path: Path, seed: int) -> Path:
    w = np.random.default_rng(seed).standard_normal((4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.flatten())],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def registry(tmp_path, monkeypatch, repo, latency):
    """A project with the shipped params.yaml and three registered versions of `digits`."""
    from components.formats.base import file_sha256
    from flows.tracking.registry import metric_tags, register
    from flows.tracking.tracker import Tracker

    shutil.copy(repo / "params.yaml", tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    monkeypatch.setenv("EDGEKD_LOCK_DIR", str(tmp_path / ".edgekd" / "locks"))
    monkeypatch.setenv("EDGEKD_USER", "tester")
    (tmp_path / "mlruns").mkdir()
    tr = Tracker(MODEL, tmp_path / "mlruns")
    m = measurement(latency)
    for seed in range(3):
        run = tr.start("pipeline", parent=True)
        f = _onnx(tmp_path / f"m{seed}.onnx", seed)
        tags = {"sha256": file_sha256(f)} | metric_tags(m, m, m)
        register(run, MODEL, f, np.ones((1, 4), np.float32), [], tags, description="tiny")
        tr.end(run)
    return tmp_path


def test_concurrent_promotions_leave_one_production_and_tell_the_loser(registry, repo):
    from filelock import FileLock
    from mlflow import MlflowClient

    from flows.tracking.promotion import history

    lock = registry / ".edgekd" / "locks" / f"registry-{MODEL}.lock"
    lock.parent.mkdir(parents=True)
    cmd = [sys.executable, "-m", "flows.cli", "--project-dir", str(registry), "promote"]
    logs = {v: (registry / f"promote{v}.out", registry / f"promote{v}.err") for v in ("2", "3")}
    with FileLock(str(lock)):  # both commands start while the registry is busy, then race for it
        procs = {
            v: subprocess.Popen([*cmd, v], cwd=repo, stdout=open(o, "w"), stderr=open(e, "w"))
            for v, (o, e) in logs.items()
        }
        deadline = time.monotonic() + 120
        while not all("waiting up to" in e.read_text() for _, e in logs.values()):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs.values()), {
                v: e.read_text() for v, (_, e) in logs.items()
            }
            time.sleep(0.2)
    out = {v: (p.wait(timeout=120), logs[v][0].read_text(), logs[v][1].read_text()) for v, p in procs.items()}

    assert sorted(rc for rc, _, _ in out.values()) == [0, 4], out
    winner = next(v for v, (rc, _, _) in out.items() if rc == 0)
    loser = next(v for v in out if v != winner)
    assert (
        f"production of digits moved from version None to {winner} while this promotion of version {loser} "
        f"waited; nothing was changed" in out[loser][2]
    )
    c = MlflowClient()
    assert str(c.get_registered_model(MODEL).aliases["production"]) == winner
    assert [v for v in "123" if "production" in c.get_model_version(MODEL, v).aliases] == [winner]
    assert [(h.to, h.refused is not None) for h in history(MODEL)] == [(winner, False), (loser, True)]


def test_promote_refuses_an_artifact_whose_sha256_changed(registry, capsys, cli):
    from mlflow import MlflowClient

    from flows.tracking.promotion import history

    c = MlflowClient()
    logged_model = Path(c.get_model_version(MODEL, "2").source).name  # models:/m-<id>: the store's own copy
    stored = next((registry / "mlruns").rglob(f"{logged_model}/artifacts/model.onnx"))
    data = bytearray(stored.read_bytes())
    data[-5] ^= 0x01
    stored.write_bytes(bytes(data))

    assert cli(registry, "promote", "2") == 4

    err = capsys.readouterr().err
    assert "digits version 2: model.onnx has sha256" in err and "was recorded at registration" in err
    assert "production" not in c.get_registered_model(MODEL).aliases
    assert history(MODEL)[-1].refused is not None


def test_promote_and_rollback_archive_the_replaced_version_and_history_tells_who(registry, capsys, cli):
    from mlflow import MlflowClient

    c = MlflowClient()
    assert cli(registry, "promote", "1") == 0 and cli(registry, "promote", "2") == 0
    assert "archived" in c.get_model_version(MODEL, "1").tags and "archived" not in c.get_model_version(MODEL, "2").tags
    assert cli(registry, "rollback") == 0
    assert "archived" not in c.get_model_version(MODEL, "1").tags and "archived" in c.get_model_version(MODEL, "2").tags
    capsys.readouterr()

    assert cli(registry, "history") == 0

    lines = capsys.readouterr().out.splitlines()
    moves = [line.split()[1:5] for line in lines if " by " in line]
    assert moves == [["promote", "(none)", "->", "1"], ["promote", "1", "->", "2"], ["rollback", "2", "->", "1"]]
    assert all("by tester" in line and line.rstrip().endswith("done") for line in lines if " by " in line)
    assert lines[-1] == "now: production = version 1, staging = version 3"


def test_a_busy_store_gets_a_bounded_wait_and_a_clear_message(registry, capsys, cli):
    import sqlite3

    from mlflow import MlflowClient

    db = sqlite3.connect(registry / "mlruns" / "mlflow.db", isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")  # another process writing to the store, and not letting go
    try:
        started = time.monotonic()
        assert cli(registry, "promote", "1") == 5
        took = time.monotonic() - started
    finally:
        db.execute("ROLLBACK")
        db.close()
    assert "stayed locked by another process beyond SQLite's 20 s busy timeout" in capsys.readouterr().err
    assert took < 60
    assert "production" not in MlflowClient().get_registered_model(MODEL).aliases


def test_a_tracking_server_that_stops_answering_gets_bounded_retries_and_a_clear_message(
    registry, monkeypatch, capsys, cli, free_port
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    started = time.monotonic()
    assert cli(registry, "history") == 6
    assert time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert "stopped answering (each request was retried 1 times)" in err and "Connection refused" in err


def test_a_version_whose_registration_never_finished_is_neither_promoted_nor_served(registry, capsys, cli):
    from mlflow import MlflowClient

    from flows.tracking.registry import COMPLETE

    MlflowClient().delete_model_version_tag(MODEL, "2", COMPLETE)  # as a run stopped between its steps leaves it
    assert cli(registry, "promote", "2") == 4
    assert cli(registry, "predict", MODEL, "1,2,3,4", "--ref", "2") == 4
    err = capsys.readouterr().err
    assert err.count("version 2 was never completely registered") == 2
    assert "production" not in MlflowClient().get_registered_model(MODEL).aliases
