"""Teachers brought as files: ONNX through ONNX Runtime and TorchScript give the logits of the network they hold;
anything else is refused with the reason."""

import numpy as np
import pytest
import torch

from components.formats.onnx_rt import export_onnx
from components.models import Ensemble, build
from components.teachers import TeacherFileError, check_teacher, load_teacher_file, logits, torch_teacher

pytestmark = pytest.mark.unit

SPEC = {"kind": "image", "input_shape": [1, 8, 8]}


@pytest.fixture
def net():
    return build("image", "teacher", SPEC, 10, 4, seed=0).eval()


def test_onnx_teacher_gives_the_networks_logits(tmp_path, net, rng):
    x = rng.random((20, 1, 8, 8), dtype=np.float32)
    export_onnx(net, x, tmp_path / "t.onnx")
    fn, module = load_teacher_file(tmp_path / "t.onnx")
    assert module is None
    assert np.allclose(logits(fn, x, batch_size=7), net(torch.from_numpy(x)).detach().numpy(), atol=1e-4)
    check_teacher(fn, x, 10, "t.onnx")
    with pytest.raises(TeacherFileError, match=r"outputs shape \[2, 10\].*expected \[2, 3\]"):
        check_teacher(fn, x, 3, "t.onnx")
    with pytest.raises(TeacherFileError, match=r"fails on the prepared inputs of shape \[1, 4, 4\]"):
        check_teacher(fn, x[:, :, :4, :4], 10, "t.onnx")


def test_torchscript_teacher_and_ensembles(tmp_path, net, rng):
    x = torch.from_numpy(rng.random((5, 1, 8, 8), dtype=np.float32))
    torch.jit.save(torch.jit.trace(net, x), str(tmp_path / "t.pt"))
    fn, module = load_teacher_file(tmp_path / "t.pt")
    assert module is not None and torch.allclose(fn(x), net(x), atol=1e-5)
    other = build("image", "teacher", SPEC, 10, 4, seed=1).eval()
    assert torch.allclose(torch_teacher(Ensemble([net, other]))(x), (net(x) + other(x)) / 2, atol=1e-6)


def test_pickles_and_unknown_files_are_refused(tmp_path, net):
    torch.save(net.state_dict(), tmp_path / "weights.pt")  # a pickle, not TorchScript: never unpickled
    with pytest.raises(TeacherFileError, match="not a TorchScript archive"):
        load_teacher_file(tmp_path / "weights.pt")
    (tmp_path / "t.onnx").write_bytes(b"not a model")
    with pytest.raises(TeacherFileError, match="not a valid ONNX model"):
        load_teacher_file(tmp_path / "t.onnx")
    (tmp_path / "t.h5").write_bytes(b"")
    with pytest.raises(TeacherFileError, match="expected an .onnx file or a TorchScript archive"):
        load_teacher_file(tmp_path / "t.h5")
    with pytest.raises(TeacherFileError, match="no such file"):
        load_teacher_file(tmp_path / "missing.onnx")
