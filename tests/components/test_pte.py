"""ExecuTorch programs: a trained digits student lowered in FP32 and INT8, run through the ExecuTorch runtime, and
timed by the same harness as ONNX files."""

import numpy as np
import pytest

from components import timing
from components.benchmark import ROOT, resolution
from components.config import BenchmarkConfig, ConfigError, PipelineConfig
from components.formats import onnx_rt, pte, runtime
from components.formats.onnx_rt import export_onnx
from components.formats.pte import export_pte, quantize_pte
from components.quantize import calibration_sample
from components.recipes import recipes

pytestmark = pytest.mark.unit

BATCH = 7  # the programs' batch size: 128 calibration samples and the test split are not multiples of it
INT8_TOLERANCE = 0.02  # as ONNX Runtime's static INT8 (test_export_quantize.py): at most 2 points below FP32


@pytest.fixture(scope="module")
def programs(small_student, digits_splits, tmp_path_factory):
    d = tmp_path_factory.mktemp("pte")
    train = digits_splits["train"].x
    batch = train[:BATCH]
    return {
        "onnx": export_onnx(small_student, train, d / "student.onnx").path,
        "fp32": export_pte(small_student, batch, d / "fp32.pte").path,
        "int8": quantize_pte(small_student, batch, calibration_sample(train, 128, 0), d / "int8.pte").path,
    }


def test_programs_score_through_executorch_as_the_onnx_file_does_through_onnx_runtime(programs, digits_splits):
    test = digits_splits["test"]
    reference = onnx_rt.predict(programs["onnx"], test.x)
    # lowered for batches of 7, a program scores them all: the last batch filled up, its extra outputs dropped
    got = pte.predict(programs["fp32"], test.x)
    assert got.shape == reference.shape and len(test.x) % BATCH
    np.testing.assert_allclose(got, reference, atol=1e-4)
    acc32 = (reference.argmax(1) == test.y).mean()
    acc8 = (pte.predict(programs["int8"], test.x).argmax(1) == test.y).mean()
    assert acc32 > 0.9 and abs(acc8 - acc32) <= INT8_TOLERANCE


def test_the_harness_times_programs_beside_onnx_files_and_charges_them_no_runtime_import(
    programs, digits_splits, tmp_path
):
    batch = tmp_path / "batch.npy"
    np.save(batch, digits_splits["test"].x[:BATCH])
    paths = [programs["onnx"], programs["int8"]]
    raw = timing.run(paths, str(batch), timing.Settings(1, 5, 50, 2), paths[0], timeout=120, cwd=ROOT)
    assert [len(r) for r in raw.rounds] == [2, 2] and all(r.p50_ms > 0 for rs in raw.rounds for r in rs)
    # torch and the ExecuTorch runtime (hundreds of MiB) load before the peak is reset: the program adds little
    assert 0 <= raw.peak_mem_mb[1] < 50, raw.peak_mem_mb


def test_a_program_is_its_own_graph_group_and_a_model_file_needs_a_known_suffix(programs, tmp_path, latency):
    lat = latency()
    paths = {"onnx": programs["onnx"], "fp32": programs["fp32"], "onnx_again": programs["onnx"]}
    res = resolution(dict.fromkeys(paths, lat), paths, lat, BenchmarkConfig(), None)
    assert res.same_graph == [["onnx", "onnx_again"]]
    assert [runtime.format_of(p) for p in paths.values()] == ["onnx", "pte", "onnx"]
    with pytest.raises(ValueError, match="unknown model format"):
        runtime.format_of(tmp_path / "model.h5")


def test_the_pte_format_adds_two_programs_per_student_judged_against_their_fp32():
    names = {r.name: r for r in recipes(("plain", "kd"), ("onnx", "pte"))}
    assert len(names) == len(recipes()) + 4
    for s in ("plain", "kd"):
        assert (names[f"{s}_pte_fp32"].source, names[f"{s}_pte_fp32"].transform) == (s, "pte")
        assert (names[f"{s}_pte_int8"].source, names[f"{s}_pte_int8"].transform) == (f"{s}_pte_fp32", "pte_int8")


@pytest.mark.parametrize("formats", [["pte"], ["onnx", "onnx"]])
def test_export_formats_hold_onnx_once(formats):
    with pytest.raises((ConfigError, ValueError), match="export.formats"):
        PipelineConfig.model_validate(
            {"data": {"name": "d", "kind": "image", "root": ".", "source": "x"}} | {"export": {"formats": formats}}
        )


def test_the_tflite_format_adds_an_fp32_file_its_int8_and_the_int8_files_onnx_twin_per_student():
    names = {r.name: r for r in recipes(("plain", "kd"), ("onnx", "tflite"))}
    assert len(names) == len(recipes()) + 6
    assert names["kd_tflite_int8"].source == "kd_tflite_fp32" and names["kd_tflite_fp32"].source == "kd"
    twin = names["kd_int8_static"]  # the unpruned student in ONNX Runtime's static INT8
    assert (twin.source, twin.transform, twin.options) == ("kd_fp32", "int8", {"mode": "static"})
