"""LiteRT and TensorFlow Lite Micro in one digits run (one run, to keep the suite's time):

- with `export.formats: [onnx, tflite]` each student gets a FP32 and a full-integer INT8 `.tflite` file, scored
  through the LiteRT interpreter, timed on this host and gated like every candidate; the INT8 file is also run under
  TFLite Micro (its accuracy there, its smallest arena, its flash), held against the MCU budgets of
  `benchmark.targets` and against `gate.max_ram_kb`, which here no candidate fits, so nothing is registered;
- the INT8 file registered as a version runs under `edgekd predict`, and `edgekd export --format tflm` writes it
  for a firmware build: a C array holding exactly the file's bytes, and the arena TFLM runs it in (not in 10%
  less)."""

import json

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

RAM_KB = 1.0  # below any network's arena: the gate must refuse every candidate, naming the arena it needed


def test_litert_candidates_run_under_tflite_micro_are_held_to_the_mcu_budget_predicted_and_exported(
    tmp_path, cli, capsys, pipeline_project, small_params
):
    import mlflow
    from mlflow import MlflowClient
    from PIL import Image

    from components.formats import litert, runtime, tflm
    from components.formats.base import file_sha256
    from flows.cli.exits import Exit
    from flows.data.layout import load_splits, prepared_dir
    from flows.tracking import registry

    targets = {"tiny": {"ram_kb": 2, "flash_kb": 64}, "nucleo_l4r5zi": {"ram_kb": 640, "flash_kb": 2048}}
    params = small_params(
        export={"formats": ["onnx", "tflite"]},
        benchmark={"warmup_runs": 2, "timed_runs": 20, "rounds": 2, "targets": targets},
        prune={"finetune_epochs": 1},
        gate={"min_accuracy": 0.1, "max_accuracy_drop": 1.0, "max_ram_kb": RAM_KB},
    )
    project = tmp_path / "project"
    project.mkdir()
    with pipeline_project(project, params):
        assert cli(project, "run", "--json", str(tmp_path / "run.json")) == Exit.NOTHING_PASSED
        out = capsys.readouterr().out
        cands = json.loads((tmp_path / "run.json").read_text())["candidates"]
        int8 = [n for n in cands if n.endswith("_tflite_int8")]
        assert "plain_tflite_int8" in int8 and {"plain_tflite_fp32", "plain_int8_static"} <= set(cands)
        val, test = (load_splits(project, "digits")[s] for s in ("val", "test"))
        for name, c in cands.items():
            assert c["format"] == ("tflite" if "_tflite_" in name else "onnx"), name
            if name in int8:  # refused for the arena it needs, which the run measured
                t = c["tflm"]
                assert t["arena_bytes"] > RAM_KB * 1024 and t["flash_bytes"] == c["size_bytes"]
                assert f"TFLite Micro arena {t['arena_bytes'] / 1024:.1f} KiB > max_ram_kb 1 KiB" in c["reasons"]
                assert t["fits"] == {"tiny": t["arena_bytes"] <= 2048, "nucleo_l4r5zi": True}
                assert t["latency"] == "not measured" and t["missing_ops"] == []
                # the same integer kernels' arithmetic: TFLM within a sample of the LiteRT interpreter
                assert _samples_apart(t["test"]["accuracy"], c["test"]["accuracy"], test.y) <= 1, name
                assert _samples_apart(t["val"]["accuracy"], c["val"]["accuracy"], val.y) <= 1, name
            else:  # no TFLM fit: with max_ram_kb set, refused for that
                assert "tflm" not in c and any("TensorFlow Lite Micro did not run" in r for r in c["reasons"]), name
        # FP32 through LiteRT and ONNX Runtime: the same predictions, or one apart
        assert (
            _samples_apart(cands["plain_tflite_fp32"]["val"]["accuracy"], cands["plain_fp32"]["val"]["accuracy"], val.y)
            <= 1
        )
        assert "TFLM − twin" in out and "fits nucleo_l4r5zi" in out

        # the INT8 file as a version: predict runs it through LiteRT; export writes it for TFLM
        chosen = cands["plain_tflite_int8"]
        model = next(p for p in (project / ".edgekd").rglob("model.tflite") if file_sha256(p) == chosen["sha256"])
        with mlflow.start_run() as run:
            pass
        version = registry.register(
            run.info.run_id,
            "digits_mcu",
            model,
            test.x[:1],
            [str(prepared_dir(project, "digits") / "preprocess.json")],
            tags={"candidate": "plain_tflite_int8", "sha256": chosen["sha256"]},
            description="the plain student as a full-integer LiteRT file",
        )
        assert registry.model_file(MlflowClient(), "digits_mcu", version, tmp_path / "dl").name == "model.tflite"
        files = []
        for i in range(10):  # raw digits are 0..16 intensities; the prepared ones are those / 16
            f = tmp_path / f"{i}.png"
            Image.fromarray(np.rint(test.x[i, 0] * 16).astype(np.uint8)).save(f)
            files.append(str(f))
        capsys.readouterr()
        assert cli(project, "predict", "digits_mcu", *files) == Exit.OK
        labels = [line.split("\t")[0] for line in capsys.readouterr().out.strip().splitlines()]
        assert labels == [str(k) for k in runtime.predict(model, test.x[:10]).argmax(1)]

        fw = tmp_path / "firmware"
        assert cli(project, "export", f"digits_mcu@{version}", str(fw), "--format", "tflm") == Exit.OK
        assert tflm.c_array_bytes((fw / "model_data.cc").read_text()) == model.read_bytes()
        meta = json.loads((fw / "model.json").read_text())
        arena = meta["arena_bytes"]
        assert (
            arena == chosen["tflm"]["arena_bytes"]
            and f"g_model_arena_size = {arena};" in (fw / "model_data.h").read_text()
        )
        tflm.interpreter(fw / "model.tflite", arena).invoke()  # runs in the arena stated
        with pytest.raises(tflm.TflmError, match="could not allocate"):
            tflm.interpreter(fw / "model.tflite", int(arena * 0.9))  # and not in 10% less
        ops_h = (fw / "model_ops.h").read_text()
        assert f"MicroMutableOpResolver<{len(meta['ops'])}>" in ops_h and "AddConv2D()" in ops_h
        spec = litert.LiteRtSession(model).input
        assert meta["input"] == spec.model_dump() and spec.dtype == "int8" and meta["sha256"] == chosen["sha256"]
        assert meta["preprocess"]["kind"] == "image"
        # a second export into the same folder is refused
        assert cli(project, "export", f"digits_mcu@{version}", str(fw)) == Exit.REFUSED
        assert "not an empty folder" in capsys.readouterr().err


def _samples_apart(a: float, b: float, y) -> int:
    """How many samples two accuracies over `y` differ by."""
    return round(abs(a - b) * len(y))
