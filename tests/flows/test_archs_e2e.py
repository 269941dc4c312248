"""Users' own architectures in the pipeline: a digits run whose teacher is the user's trained ResNet-8 (MLPerf Tiny's
reference, a safetensors checkpoint, not trained here) and whose students come from a factory in the project
(`student.arch: MODULE:FUNCTION`)."""

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
    for _ in range(4):
        for i in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
    save_file(model.state_dict(), str(path))


def test_a_checkpoint_teacher_of_a_reference_arch_and_a_factory_student(
    tmp_path, cli, capsys, pipeline_project, small_params
):
    from mlflow import MlflowClient

    project = tmp_path / "project"
    project.mkdir()
    (project / "user_models.py").write_text(FACTORY)
    _users_resnet8(project / "resnet8_digits.safetensors")
    params = small_params(
        teacher={"arch": "resnet8", "width": 1, "weights": "resnet8_digits.safetensors"},
        student={"arch": "user_models:build_student", "epochs": 10},
        prune={"finetune_epochs": 1},
        gate={"min_accuracy": 0.1, "max_accuracy_drop": 1.0},  # which candidate passes is not the point here
        benchmark={"rounds": 2},
    )
    with pipeline_project(project, params):
        assert cli(project, "run", "--json", str(tmp_path / "run.json")) == 0
        c = MlflowClient()
        runs = c.search_runs([c.get_experiment_by_name("digits").experiment_id])
    summary = json.loads((tmp_path / "run.json").read_text())
    teacher = [r for r in runs if r.data.tags.get("stage") == "teacher"]
    assert teacher and teacher[0].data.tags["source"] == "checkpoint resnet8_digits.safetensors"
    assert not [r for r in runs if r.data.tags.get("stage") == "teacher_member"]  # nothing trained for it
    assert summary["candidates"]["teacher_fp32"]["val"]["accuracy"] > 0.5  # the user's network, scored through ORT
    cands = summary["candidates"]
    # the factory's student (16 channels, no hidden linear layer) is what was trained, pruned and quantized
    assert {"plain_fp32", "plain_pruned_fp32", "plain_pruned_int8_static"} <= set(cands)
    assert cands["plain_fp32"]["size_bytes"] < 8 * 1024 < cands["teacher_fp32"]["size_bytes"]
    assert cands["plain_pruned_fp32"]["size_bytes"] < cands["plain_fp32"]["size_bytes"]
