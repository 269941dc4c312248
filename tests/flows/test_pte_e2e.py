"""ExecuTorch as a second deployable format: with `export.formats: [onnx, pte]` a digits run builds each student's
`.pte` programs (FP32 and INT8), scores them through the ExecuTorch runtime, times them on this host (a device
agent without ExecuTorch times the ONNX candidates only; one with it is tested in test_device_agent.py), and gates
them like every candidate. A `.pte` version in the registry runs under `edgekd predict` as an ONNX one does."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.e2e


def test_pte_candidates_are_built_scored_timed_where_they_run_gated_and_predicted(
    tmp_path, cli, capsys, pipeline_project, small_params, device_agent
):
    import mlflow
    from mlflow import MlflowClient
    from PIL import Image

    from components.export import file_sha256, runtime_predict
    from flows.data.layout import load_splits, prepared_dir
    from flows.tracking import registry

    bare = device_agent(tmp_path / "bare", "--cpus", "0", without=("executorch",))
    targets = {"bare": {"url": bare.url, "token_file": str(bare.token_file)}}
    params = small_params(
        export={"formats": ["onnx", "pte"]},
        benchmark={"warmup_runs": 2, "timed_runs": 20, "rounds": 2, "targets": targets},
        teacher={"epochs": 2, "patience": 2},
        student={"epochs": 3},
        prune={"finetune_epochs": 1},
    )
    project = tmp_path / "project"
    project.mkdir()
    try:
        with pipeline_project(project, params):
            assert cli(project, "run", "--json", str(tmp_path / "run.json")) == 0
            out = capsys.readouterr().out
            summary = json.loads((tmp_path / "run.json").read_text())
            cands = summary["candidates"]
            students = ["plain", "kd"] if "kd_fp32" in cands else ["plain"]
            pte = [f"{s}_pte_{p}" for s in students for p in ("fp32", "int8")]
            assert set(pte) <= set(cands) and "plain_pte_fp32" in out
            for name, c in cands.items():
                assert c["format"] == ("pte" if name in pte else "onnx"), name
                # timed on this host; the bare agent runs ONNX only
                assert set(c["targets"]) == ({"host"} if name in pte else {"host", "bare"}), name
                assert c["gate"] in ("pass", "fail"), name
            assert summary["targets"]["bare"]["device"]["formats"] == ["onnx"]
            val = load_splits(project, "digits")["val"]
            for s in students:  # the same weights in FP32 through two runtimes: the same predictions, or one apart
                onnx_acc, pte_acc = cands[f"{s}_fp32"]["val"]["accuracy"], cands[f"{s}_pte_fp32"]["val"]["accuracy"]
                assert abs(onnx_acc - pte_acc) <= 1 / len(val.y), s
                int8 = cands[f"{s}_pte_int8"]
                for r in int8["reasons"]:  # an INT8 program is judged against its FP32 program
                    if r.startswith("INT8"):
                        assert f"{cands[f'{s}_pte_fp32']['p95']['value']:.4f}" in r, r

            # an FP32 program registered as a version (the gate's choice may be either format): predict runs it
            chosen = cands["plain_pte_fp32"]
            program = next(
                p
                for p in (project / ".edgekd" / "artifacts" / "pte").rglob("model.pte")
                if file_sha256(p) == chosen["sha256"]
            )
            test = load_splits(project, "digits")["test"]
            with mlflow.start_run() as run:
                pass
            version = registry.register(
                run.info.run_id,
                "digits_pte",
                program,
                test.x[:1],
                [str(prepared_dir(project, "digits") / "preprocess.json")],
                tags={"candidate": "plain_pte_fp32", "sha256": chosen["sha256"]},
                description="the plain student as an ExecuTorch program",
            )
            assert registry.model_file(MlflowClient(), "digits_pte", version).name == "model.pte"
            files = []
            for i in range(10):  # raw digits are 0..16 intensities; the prepared ones are those / 16
                f = tmp_path / f"{i}.png"
                Image.fromarray(np.rint(test.x[i, 0] * 16).astype(np.uint8)).save(f)
                files.append(str(f))
            proc = subprocess.run(
                [sys.executable, "-m", "flows.cli", "--project-dir", str(project), "predict", "digits_pte", *files],
                capture_output=True,
                text=True,
                timeout=300,
                cwd=project,
            )
            assert proc.returncode == 0, proc.stderr[-2000:]
            labels = [line.split("\t")[0] for line in proc.stdout.strip().splitlines()]
            assert labels == [str(k) for k in runtime_predict(program, test.x[:10]).argmax(1)]
    finally:
        bare.stop()
