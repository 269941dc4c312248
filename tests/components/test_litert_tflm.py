"""LiteRT files and their TensorFlow Lite Micro fit: a trained digits student lowered in FP32 and full-integer INT8,
run by the LiteRT interpreter and by TFLM's, timed by the same harness as ONNX files, written for a firmware build."""

import numpy as np
import pytest
import torch

from components import timing
from components.benchmark import ROOT
from components.formats import litert, onnx_rt, runtime, tflm
from components.quantize import calibration_sample

pytestmark = pytest.mark.unit

BATCH = 1  # the device profile's default, and what a microcontroller runs
INT8_TOLERANCE = 0.02  # as ONNX Runtime's static INT8 (test_export_quantize.py): at most 2 points below FP32


@pytest.fixture(scope="module")
def files(small_student, digits_splits, tmp_path_factory):
    d = tmp_path_factory.mktemp("litert")
    train = digits_splits["train"].x
    fp32 = litert.lower(small_student, train[:BATCH], d / "fp32.tflite").path
    return {
        "onnx": onnx_rt.export_onnx(small_student, train, d / "student.onnx").path,
        "fp32": fp32,
        "int8": litert.quantize(fp32, calibration_sample(train, 128, 0), d / "int8.tflite").path,
    }


def test_litert_scores_as_onnx_runtime_in_fp32_and_within_two_points_in_full_integer_int8(files, digits_splits):
    test = digits_splits["test"]
    reference = onnx_rt.predict(files["onnx"], test.x)
    np.testing.assert_allclose(runtime.predict(files["fp32"], test.x), reference, atol=1e-4)
    session = litert.LiteRtSession(files["int8"])
    assert (session.input.dtype, session.output.dtype) == ("int8", "int8") and session.input.scale > 0
    acc32 = (reference.argmax(1) == test.y).mean()
    acc8 = (runtime.predict(files["int8"], test.x).argmax(1) == test.y).mean()
    assert acc32 > 0.9 and abs(acc8 - acc32) <= INT8_TOLERANCE


def test_tflm_runs_in_the_smallest_arena_found_and_not_in_16_bytes_less(files):
    fit = tflm.fit(files["int8"])
    assert fit.runs and fit.input_dtype == "int8" and "CONV_2D" in fit.ops and "FULLY_CONNECTED" in fit.ops
    assert fit.arena_bytes % tflm.ALIGN == 0 and fit.flash_bytes == len(open(files["int8"], "rb").read())
    tflm.interpreter(files["int8"], fit.arena_bytes).invoke()
    with pytest.raises(tflm.TflmError, match="could not allocate") as refused:
        tflm.interpreter(files["int8"], fit.arena_bytes - tflm.ALIGN)
    assert refused.value.missing == []


def test_tflm_computes_what_the_litert_interpreter_computes_from_the_same_integers(files, digits_splits):
    x = digits_splits["test"].x[:60]
    arena = tflm.smallest_arena(files["int8"])
    on_mcu, on_litert = tflm.predict(files["int8"], x, arena), runtime.predict(files["int8"], x)
    assert on_mcu.shape == on_litert.shape == (60, 10)
    # the same int8 tensors through two interpreters' reference and optimised kernels: at most a step of the
    # output's scale apart, and the same labels
    step = litert.LiteRtSession(files["int8"]).output.scale
    assert np.abs(on_mcu - on_litert).max() <= step + 1e-6
    assert (on_mcu.argmax(1) == on_litert.argmax(1)).mean() >= 0.98


def test_an_operator_tflm_lacks_is_named_and_leaves_no_arena(tmp_path):
    class Atan2(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(torch.atan2(x, x + 1.0))

    x = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)
    path = litert.lower(Atan2().eval(), x, tmp_path / "atan2.tflite").path
    fit = tflm.fit(path)
    assert fit.missing_ops == ["ATAN2"] and not fit.runs and fit.arena_bytes == 0 and fit.input_dtype == "float32"
    with pytest.raises(tflm.TflmError, match="ATAN2"):
        tflm.write_firmware(path, tmp_path / "fw", {}, {})
    assert not (tmp_path / "fw").exists()


def test_the_c_array_holds_the_files_bytes_and_the_resolver_names_its_operators(files, tmp_path):
    data = open(files["int8"], "rb").read()
    assert tflm.c_array_bytes(tflm.c_source(data, "g_model")) == data
    assert tflm.resolver_calls(["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MAX_POOL_2D"]) == [
        "AddConv2D()",
        "AddDepthwiseConv2D()",
        "AddFullyConnected()",
        "AddAdd()",
        "AddMaxPool2D()",
    ]
    out = tflm.write_firmware(files["int8"], tmp_path / "fw", {"kind": "image"}, {"model": "digits"})
    assert out.files == ["model.json", "model.tflite", "model_data.cc", "model_data.h", "model_ops.h"]
    assert (tmp_path / "fw" / "model.tflite").read_bytes() == data and out.input.dtype == "int8"
    with pytest.raises(FileExistsError, match="not an empty folder"):
        tflm.write_firmware(files["int8"], tmp_path / "fw", {}, {})
    with pytest.raises(tflm.TflmError, match="only a full-integer"):  # an FP32 file runs under TFLM, but not as INT8
        tflm.write_firmware(files["fp32"], tmp_path / "fw32", {}, {})
    assert not (tmp_path / "fw32").exists() and not list(tmp_path.glob(".fw*"))  # nothing half-written


def test_the_harness_times_litert_files_beside_onnx_files(files, digits_splits, tmp_path):
    batch = tmp_path / "batch.npy"
    np.save(batch, digits_splits["test"].x[:BATCH])
    paths = [files["onnx"], files["int8"]]
    raw = timing.run(paths, str(batch), timing.Settings(1, 5, 50, 2), paths[0], timeout=120, cwd=ROOT)
    assert [len(r) for r in raw.rounds] == [2, 2] and all(r.p50_ms > 0 for rs in raw.rounds for r in rs)
    assert runtime.format_of(files["int8"]) == "tflite" and "tflite" in runtime.available()


def test_a_format_whose_tools_are_missing_is_named_with_how_to_get_them(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "litert_torch" else real(name))
    runtime.check_makeable(["onnx", "pte"])
    with pytest.raises(ValueError, match=r"`tflite` needs litert_torch: install edgekd\[litert\]"):
        runtime.check_makeable(["onnx", "tflite"])


@pytest.mark.parametrize(
    "kind, spec, dtype",
    [
        ("text", {"input_shape": [32], "vocab_size": 200, "max_len": 32, "pad_id": 0}, "int32"),  # ids stay ids
        ("tabular", {"input_shape": [30]}, "int8"),
        ("audio", {"input_shape": [1, 40, 49]}, "int8"),
    ],
)
def test_every_kind_lowers_quantizes_and_runs_under_tflm(kind, spec, dtype, tmp_path):
    from components.models import build

    rng = np.random.default_rng(0)
    shape = (64, *spec["input_shape"])
    x = rng.integers(1, 200, shape) if kind == "text" else rng.standard_normal(shape).astype(np.float32)
    model = build(kind, "student", spec, 3, 4, seed=0).eval()
    fp32 = litert.lower(model, x[:1], tmp_path / "fp32.tflite").path
    reference = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(runtime.predict(fp32, x), reference, atol=1e-4)
    int8 = litert.quantize(fp32, x, tmp_path / "int8.tflite").path
    fit = tflm.fit(int8)
    assert fit.runs and fit.arena_bytes > 0 and fit.input_dtype == dtype
    on_mcu = tflm.predict(int8, x[:16], fit.arena_bytes)
    assert (on_mcu.argmax(1) == runtime.predict(int8, x[:16]).argmax(1)).mean() >= 0.9
