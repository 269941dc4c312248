"""The pipeline measuring on device agents: two real agents on 127.0.0.1, one emulating a slow device with a CPU
quota, as `benchmark.targets`, the slow one as `gate.target`. A target killed mid-measurement fails the run with
its own exit code and registers nothing; the re-run, with the agent back, completes from the cache."""

import json
import threading
import time

import pytest

from tests.conftest import require

pytestmark = pytest.mark.e2e

BATCH = 128  # the teacher's calls take milliseconds: the quota slows each one (a quota is a share of time: emulate.py)
# A tenth of a CPU. The fast agent is 2x faster than the slow one only while its share of CPU 0 stays over twice
# the quota (with a quarter, one busy process beside it made it a tie): it is also given a heavy CPU weight, so that
# other load on the machine does not decide that.
QUOTA = "0.1"


def _kill_when_measuring(agent) -> threading.Thread:
    """Kill `agent` as soon as a measurement has begun on it (its temporary folder appears)."""

    def watch():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and agent.proc.poll() is None:
            if any(p.name.startswith("edgekd-agent-") for p in agent.work.iterdir()):
                agent.stop()
                return
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_every_candidate_is_measured_on_every_target_and_the_gate_uses_its_own(
    tmp_path, cli, capsys, pipeline_project, small_params, device_agent, free_port
):
    from mlflow import MlflowClient

    port = free_port()
    slow = device_agent(tmp_path / "slow", "--cpus", "0", "--cpu-quota", QUOTA, port=port, expect_failure=True)
    ok = slow.proc.returncode is None  # else it started, said why it cannot limit itself, and exited 1
    require(ok, f"no writable cgroup cpu controller here (run as root): {'' if ok else slow.stderr.strip()}")
    fast = device_agent(tmp_path / "fast", "--cpus", "0")
    fast.favour()
    targets = {
        "board": {"url": fast.url, "token_file": str(fast.token_file)},
        "slow_board": {"url": slow.url, "token_env": "SLOW_BOARD_TOKEN"},
    }
    params = small_params(
        benchmark={"batch_size": BATCH, "warmup_runs": 1, "timed_runs": 10, "rounds": 2, "targets": targets},
        gate={"target": "slow_board", "max_p95_ms": 10_000.0},
        teacher={"epochs": 2, "patience": 2},  # what is trained does not matter here, only that it is measured
        student={"epochs": 2},
        prune={"finetune_epochs": 1},
    )
    project = tmp_path / "project"
    project.mkdir()
    try:
        with pipeline_project(project, params, SLOW_BOARD_TOKEN=slow.TOKEN):
            watcher = _kill_when_measuring(slow)
            assert cli(project, "run") == 7
            watcher.join()
            err = capsys.readouterr().err
            assert "target 'slow_board'" in err and "stopped answering after 4 tries" in err
            assert slow.TOKEN not in err
            c = MlflowClient()
            assert not c.search_model_versions("name='digits'")  # nothing registered
            # the agent back on its port: the re-run trains nothing and measures again
            slow = device_agent(tmp_path / "slow", "--cpus", "0", "--cpu-quota", QUOTA, port=port)
            assert cli(project, "run", "--json", str(tmp_path / "run.json")) == 0
            out = capsys.readouterr().out
            summary = json.loads((tmp_path / "run.json").read_text())
            runs = c.search_runs([c.get_experiment_by_name("digits").experiment_id], "tags.stage = 'student_kd'")
            assert {r.data.tags.get("cached") for r in runs} == {"False", "True"}  # trained once, then from cache
    finally:
        fast.stop()
        slow.stop()
    assert summary["gate_target"] == "slow_board"
    assert set(summary["targets"]) == {"host", "board", "slow_board"}
    assert "emulation" in summary["targets"]["slow_board"]["device"]
    assert summary["targets"]["slow_board"]["device"]["emulation"].startswith("cgroup v")
    long_calls = 0
    for name, cand in summary["candidates"].items():
        on = cand["targets"]
        assert set(on) == {"host", "board", "slow_board"}, name
        assert cand["p95_ms"] == on["slow_board"]["p95"]["value"]  # the gate's numbers are the gate target's
        fast_p50, slow_p50 = on["board"]["p50"]["value"], on["slow_board"]["p50"]["value"]
        if fast_p50 >= 2.0:  # a call this long is slowed by the quota every time
            long_calls += 1
            assert slow_p50 >= 2 * fast_p50, (name, fast_p50, slow_p50)
    assert long_calls >= 1, summary["candidates"]
    assert "latency on slow_board" in out and "p50 @host" in out and "p50 @board" in out
    mv = c.get_model_version_by_alias("digits", "staging")
    assert float(mv.tags["metric.p95_ms"]) == summary["candidates"][summary["registered"]["candidate"]]["p95_ms"]
    logged = [r.data for r in c.search_runs([c.get_experiment_by_name("digits").experiment_id])]
    per_target = [d.metrics for d in logged if "p95_ms.slow_board" in d.metrics]
    assert len(per_target) >= len(summary["candidates"]) and all("p95_ms.board" in m for m in per_target)
    assert not any(slow.TOKEN in str(v) for d in logged for v in [*d.params.values(), *d.tags.values()])
