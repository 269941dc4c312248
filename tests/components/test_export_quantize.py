import errno
import os

import numpy as np
import pytest
import torch

from components.formats import onnx_rt, runtime
from components.formats.base import atomic_path, file_sha256
from components.formats.onnx_rt import export_onnx
from components.quantize import calibration_sample, quantize_dynamic_int8, quantize_static_int8

pytestmark = pytest.mark.unit

# Stated tolerance: INT8 may lose at most 2 accuracy points against FP32 on the digits test split.
INT8_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def fp32(small_student, digits_splits, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "student.onnx"
    info = export_onnx(small_student, digits_splits["test"].x, path)
    return small_student, path, info


def test_export_is_checked_and_matches_pytorch(fp32, digits_splits):
    model, path, info = fp32
    assert info.size_bytes == os.path.getsize(path) and info.sha256 == file_sha256(path)
    x = digits_splits["test"].x[:33]  # a batch size other than the export example's: the batch axis is dynamic
    np.testing.assert_allclose(onnx_rt.predict(path, x), model(torch.from_numpy(x)).detach().numpy(), atol=1e-4)


def test_static_and_dynamic_int8_stay_within_tolerance_of_fp32(fp32, digits_splits, tmp_path):
    _, path, _ = fp32
    test, train = digits_splits["test"], digits_splits["train"]
    acc32 = runtime.accuracy(path, test.x, test.y)
    assert acc32 > 0.9  # the comparison only means something for a model that learned
    static = quantize_static_int8(path, tmp_path / "s.onnx", calibration_sample(train.x, 128, 0))
    dynamic = quantize_dynamic_int8(path, tmp_path / "d.onnx")
    for info in (static, dynamic):
        assert abs(runtime.accuracy(info.path, test.x, test.y) - acc32) <= INT8_TOLERANCE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx", "s.onnx"]  # no temp files left


@pytest.mark.parametrize(
    "failure",
    [RuntimeError("killed mid-write"), OSError(errno.ENOSPC, "No space left on device")],
    ids=["killed", "disk-full"],
)
def test_atomic_path_leaves_previous_file_on_failure(tmp_path, failure):
    target = tmp_path / "model.onnx"
    target.write_text("previous")
    with pytest.raises(type(failure)):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise failure
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_calibration_sample_is_a_seeded_subset():
    x = np.arange(100, dtype=np.float32)[:, None]
    a, b = calibration_sample(x, 10, 3), calibration_sample(x, 10, 3)
    assert len(a) == 10 and np.array_equal(a, b) and len(np.unique(a)) == 10
    assert len(calibration_sample(x, 500, 3)) == 100


def test_export_carries_no_debug_metadata(fp32):
    import onnx

    _, path, _ = fp32
    model = onnx.load(str(path))
    assert not any(n.metadata_props for n in model.graph.node)  # torch.export's stack traces hold local paths
    assert b"/work/" not in path.read_bytes() and b"stack_trace" not in path.read_bytes()


def test_fp16_halves_the_weights_and_keeps_the_predictions(fp32, digits_splits, tmp_path):
    import onnx

    from components.energy import count
    from components.quantize import convert_fp16

    _, path, _ = fp32
    info = convert_fp16(path, tmp_path / "h.onnx")
    # float weights halve; the Reshape's int64 shape constant (16 bytes) does not
    assert count(path).weight_bytes // 2 < count(info.path).weight_bytes <= count(path).weight_bytes // 2 + 16
    assert onnx.load(info.path).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = digits_splits["test"].x
    assert (onnx_rt.predict(info.path, x).argmax(1) == onnx_rt.predict(path, x).argmax(1)).mean() > 0.99
