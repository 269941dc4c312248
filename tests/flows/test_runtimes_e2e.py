"""A user's own architectures shipped in every runtime's format, in one digits run (one run, to keep the suite's
time):

- the teacher is the user's trained ResNet-8 (MLPerf Tiny's reference; a safetensors checkpoint, not trained
  here), the students come from a factory in the project (`student.arch: MODULE:FUNCTION`);
- with `export.formats: [onnx, pte, tflite]` each student also gets `.pte` programs and `.tflite` files (FP32 and
  INT8), scored through the ExecuTorch runtime and the LiteRT interpreter, timed on this host (a device agent
  without ExecuTorch times the ONNX and LiteRT candidates only; one with it is tested in test_device_agent.py) and
  gated like every candidate; a `.pte` and a `.tflite` version in the registry run under `edgekd predict` as an
  ONNX one does;
- each full-integer `.tflite` file also runs under TensorFlow Lite Micro (its accuracy there, its smallest arena,
  its flash), is held against the MCU budgets of `benchmark.targets` and against `gate.max_ram_kb`, which here no
  candidate fits, so nothing is registered by the run; `edgekd export --format tflm` writes a registered one for
  a firmware build: a C array of exactly the file's bytes, and the arena TFLM runs it in (not in 10% less)."""

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


RAM_KB = 1.0  # below any network's arena: the gate must refuse every candidate, naming the arena it needed


def _samples_apart(a: float, b: float, y) -> int:
    """How many samples two accuracies over `y` differ by."""
    return round(abs(a - b) * len(y))


def _register(project, name: str, candidate: str, summary: dict, folder: str):
    """A candidate's file (its run summary `summary`), found by its sha256 among the run's artifacts, registered as
    a version of `name`."""
    import mlflow

    from components.formats.base import file_sha256
    from flows.data.layout import load_splits, prepared_dir
    from flows.tracking import registry

    path = next(
        p for p in (project / ".edgekd" / "artifacts" / folder).rglob("model.*") if file_sha256(p) == summary["sha256"]
    )
    with mlflow.start_run() as run:
        pass
    test = load_splits(project, "digits")["test"]
    spec = str(prepared_dir(project, "digits") / "preprocess.json")
    tags = {"candidate": candidate, "sha256": summary["sha256"]}
    version = registry.register(run.info.run_id, name, path, test.x[:1], [spec], tags=tags, description=name)
    return path, version


def test_users_architectures_in_every_runtime_built_scored_timed_gated_predicted_and_fit_to_a_microcontroller(
    tmp_path, cli, capsys, pipeline_project, small_params, device_agent
):
    from mlflow import MlflowClient
    from PIL import Image

    from components.formats import litert, runtime, tflm
    from flows.cli.exits import Exit
    from flows.data.layout import load_splits
    from flows.tracking import registry

    bare = device_agent(tmp_path / "bare", "--cpus", "0", without=("executorch",))
    targets = {"bare": {"url": bare.url, "token_file": str(bare.token_file)}}
    targets |= {"tiny": {"ram_kb": 2, "flash_kb": 64}, "nucleo_l4r5zi": {"ram_kb": 640, "flash_kb": 2048}}
    params = small_params(
        export={"formats": ["onnx", "pte", "tflite"]},
        benchmark={"warmup_runs": 2, "timed_runs": 20, "rounds": 2, "targets": targets},
        teacher={"arch": "resnet8", "width": 1, "weights": "resnet8_digits.safetensors"},
        student={"arch": "user_models:build_student", "epochs": 6},
        prune={"finetune_epochs": 1},
        gate={"min_accuracy": 0.1, "max_accuracy_drop": 1.0, "max_ram_kb": RAM_KB},
    )
    project = tmp_path / "project"
    project.mkdir()
    (project / "user_models.py").write_text(FACTORY)
    _users_resnet8(project / "resnet8_digits.safetensors")
    try:
        with pipeline_project(project, params):
            assert cli(project, "run", "--json", str(tmp_path / "run.json")) == Exit.NOTHING_PASSED
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
            files = {f: [f"{s}_{f}_{p}" for s in students for p in ("fp32", "int8")] for f in ("pte", "tflite")}
            assert set(files["pte"] + files["tflite"]) <= set(cands) and "plain_pte_fp32" in out
            assert {f"{s}_int8_static" for s in students} <= set(cands)  # the INT8 files' ONNX twins
            val, test = (load_splits(project, "digits")[s] for s in ("val", "test"))
            for name, c in cands.items():
                fmt = next((f for f, names in files.items() if name in names), "onnx")
                assert c["format"] == fmt, name
                # timed on this host; the bare agent runs no ExecuTorch (an MCU budget times nothing)
                assert set(c["targets"]) == ({"host"} if fmt == "pte" else {"host", "bare"}), name
                assert c["gate"] == "fail", name
                if name.endswith("_tflite_int8"):  # refused for the arena it needs, which the run found
                    t = c["tflm"]
                    assert t["arena_bytes"] > RAM_KB * 1024 and t["flash_bytes"] == c["size_bytes"]
                    assert f"TFLite Micro arena {t['arena_bytes'] / 1024:.1f} KiB > max_ram_kb 1 KiB" in c["reasons"]
                    assert t["fits"] == {"tiny": t["arena_bytes"] <= 2048, "nucleo_l4r5zi": True}
                    assert t["latency"] == "not measured" and t["missing_ops"] == [] and t["input_dtype"] == "int8"
                    # the same integer arithmetic: TFLM within a sample of the LiteRT interpreter
                    assert _samples_apart(t["test"]["accuracy"], c["test"]["accuracy"], test.y) <= 1, name
                    assert _samples_apart(t["val"]["accuracy"], c["val"]["accuracy"], val.y) <= 1, name
                else:  # no TFLM fit: with max_ram_kb set, refused for that
                    assert "tflm" not in c, name
                    assert any("TensorFlow Lite Micro did not run" in r for r in c["reasons"]), name
            assert summary["targets"]["bare"]["device"]["formats"] == ["onnx", "tflite"]  # LiteRT, no ExecuTorch
            assert "TFLM − twin" in out and "fits nucleo_l4r5zi" in out
            for s in students:  # the same weights in FP32 through three runtimes: the same predictions, or one apart
                for f in ("pte", "tflite"):
                    a, b = (cands[n]["val"]["accuracy"] for n in (f"{s}_fp32", f"{s}_{f}_fp32"))
                    assert _samples_apart(a, b, val.y) <= 1, (s, f)
                    for r in cands[f"{s}_{f}_int8"]["reasons"]:  # an INT8 file is judged against its FP32 file
                        if r.startswith("INT8"):
                            assert f"{cands[f'{s}_{f}_fp32']['p95']['value']:.4f}" in r, r

            # an FP32 program and a full-integer LiteRT file as versions: predict runs each through its runtime
            images = []
            for i in range(10):  # raw digits are 0..16 intensities; the prepared ones are those / 16
                f = tmp_path / f"{i}.png"
                Image.fromarray(np.rint(test.x[i, 0] * 16).astype(np.uint8)).save(f)
                images.append(str(f))
            for name, candidate, folder in (
                ("digits_pte", "plain_pte_fp32", "pte"),
                ("digits_mcu", "plain_tflite_int8", "tflite"),
            ):
                path, version = _register(project, name, candidate, cands[candidate], folder)
                assert registry.model_file(MlflowClient(), name, version, tmp_path / name).name == path.name
                capsys.readouterr()
                assert cli(project, "predict", name, *images) == Exit.OK
                labels = [line.split("\t")[0] for line in capsys.readouterr().out.strip().splitlines()]
                assert labels == [str(k) for k in runtime.predict(path, test.x[:10]).argmax(1)], name

            # the LiteRT version exported for a firmware build
            fw = tmp_path / "firmware"
            assert cli(project, "export", f"digits_mcu@{version}", str(fw), "--format", "tflm") == Exit.OK
            assert tflm.c_array_bytes((fw / "model_data.cc").read_text()) == path.read_bytes()
            meta = json.loads((fw / "model.json").read_text())
            arena = meta["arena_bytes"]
            assert arena == cands["plain_tflite_int8"]["tflm"]["arena_bytes"]
            assert f"g_model_arena_size = {arena};" in (fw / "model_data.h").read_text()
            tflm.interpreter(fw / "model.tflite", arena).invoke()  # runs in the arena stated
            with pytest.raises(tflm.TflmError, match="could not allocate"):
                tflm.interpreter(fw / "model.tflite", int(arena * 0.9))  # and not in 10% less
            ops_h = (fw / "model_ops.h").read_text()
            assert f"MicroMutableOpResolver<{len(meta['ops'])}>" in ops_h and "AddConv2D()" in ops_h
            spec = litert.LiteRtSession(path).input
            assert meta["input"] == spec.model_dump() and spec.dtype == "int8"
            assert meta["sha256"] == cands["plain_tflite_int8"]["sha256"] and meta["preprocess"]["kind"] == "image"
            # a second export into the same folder is refused, and so is a version that is no LiteRT file
            assert cli(project, "export", f"digits_mcu@{version}", str(fw)) == Exit.REFUSED
            assert "not an empty folder" in capsys.readouterr().err
            assert cli(project, "export", "digits_pte@1", str(tmp_path / "fw_pte")) == Exit.REFUSED
            assert "only a full-integer LiteRT version" in capsys.readouterr().err
    finally:
        bare.stop()
