"""A user's own architectures shipped in both formats, in one digits run (one run, to keep the suite's time):

- the teacher is the user's trained ResNet-8 (MLPerf Tiny's reference; a safetensors checkpoint, not trained
  here), the students come from a factory in the project (`student.arch: MODULE:FUNCTION`);
- with `export.formats: [onnx, pte]` each student also gets `.pte` programs (FP32 and INT8), scored through the
  ExecuTorch runtime, timed on this host (a device agent without ExecuTorch times the ONNX candidates only; one
  with it is tested in test_device_agent.py) and gated like every candidate; a `.pte` version in the registry
  runs under `edgekd predict` as an ONNX one does."""

import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.e2e

FACTORY = '''
from torch import nn


def build_student(num_classes, input_shape):
    """A user's student: two convs, global pooling, a linear head."""
    c = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
    )
'''


def _users_resnet8(path):
    """What a user brings: a ResNet-8 trained elsewhere (here, briefly, on the digits) saved as safetensors."""
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits

    from components.models import build

    x, y = load_digits(return_X_y=True)
    x = torch.from_numpy((x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8))
    y = torch.from_numpy(y)
    model = build("image", "teacher", {"input_shape": [1, 8, 8]}, 10, 1, seed=0, arch="resnet8")
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    for _ in range(2):
        for i in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
    save_file(model.state_dict(), str(path))


def test_users_architectures_as_onnx_and_pte_candidates_built_scored_timed_gated_and_predicted(
    tmp_path, cli, capsys, pipeline_project, small_params, device_agent
):
    import mlflow
    from mlflow import MlflowClient
    from PIL import Image

    from components.formats import runtime
    from components.formats.base import file_sha256
    from flows.data.layout import load_splits, prepared_dir
    from flows.tracking import registry

    bare = device_agent(tmp_path / "bare", "--cpus", "0", without=("executorch",))
    targets = {"bare": {"url": bare.url, "token_file": str(bare.token_file)}}
    params = small_params(
        export={"formats": ["onnx", "pte"]},
        benchmark={"warmup_runs": 2, "timed_runs": 20, "rounds": 2, "targets": targets},
        teacher={"arch": "resnet8", "width": 1, "weights": "resnet8_digits.safetensors"},
        student={"arch": "user_models:build_student", "epochs": 6},
        prune={"finetune_epochs": 1},
        gate={"min_accuracy": 0.1, "max_accuracy_drop": 1.0},  # which candidate passes is not the point here
    )
    project = tmp_path / "project"
    project.mkdir()
    (project / "user_models.py").write_text(FACTORY)
    _users_resnet8(project / "resnet8_digits.safetensors")
    try:
        with pipeline_project(project, params):
            assert cli(project, "run", "--json", str(tmp_path / "run.json")) == 0
            out = capsys.readouterr().out
            summary = json.loads((tmp_path / "run.json").read_text())
            cands = summary["candidates"]
            runs = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("digits").experiment_id])
            teacher = [r for r in runs if r.data.tags.get("stage") == "teacher"]
            assert teacher and teacher[0].data.tags["source"] == "checkpoint resnet8_digits.safetensors"
            assert not [r for r in runs if r.data.tags.get("stage") == "teacher_member"]  # nothing trained for it
            assert cands["teacher_fp32"]["val"]["accuracy"] > 0.5  # the user's network, scored through ORT
            # the factory's student (16 channels, no hidden linear layer) is what was trained, pruned and quantized
            assert cands["plain_fp32"]["size_bytes"] < 8 * 1024 < cands["teacher_fp32"]["size_bytes"]
            assert cands["plain_pruned_fp32"]["size_bytes"] < cands["plain_fp32"]["size_bytes"]
            students = ["plain", "kd"] if "kd_fp32" in cands else ["plain"]
            pte = [f"{s}_pte_{p}" for s in students for p in ("fp32", "int8")]
            assert set(pte) <= set(cands) and "plain_pte_fp32" in out
            for name, c in cands.items():
                assert c["format"] == ("pte" if name in pte else "onnx"), name
                # timed on this host; the bare agent runs no ExecuTorch
                assert set(c["targets"]) == ({"host"} if name in pte else {"host", "bare"}), name
                assert c["gate"] in ("pass", "fail"), name
            assert summary["targets"]["bare"]["device"]["formats"] == ["onnx", "tflite"]  # LiteRT, no ExecuTorch
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
            assert registry.model_file(MlflowClient(), "digits_pte", version, tmp_path).name == "model.pte"
            files = []
            for i in range(10):  # raw digits are 0..16 intensities; the prepared ones are those / 16
                f = tmp_path / f"{i}.png"
                Image.fromarray(np.rint(test.x[i, 0] * 16).astype(np.uint8)).save(f)
                files.append(str(f))
            capsys.readouterr()
            assert cli(project, "predict", "digits_pte", *files) == 0
            labels = [line.split("\t")[0] for line in capsys.readouterr().out.strip().splitlines()]
            assert labels == [str(k) for k in runtime.predict(program, test.x[:10]).argmax(1)]
    finally:
        bare.stop()
