"""Every architecture route: edgekd's family, MLPerf Tiny's DS-CNN and ResNet-8 (one from a local weights file) and
a user's factory, each built, trained briefly, pruned, exported and quantized to static INT8, with ONNX Runtime's
outputs against PyTorch's. torchvision's builders cannot be imported beside the locked CPU torch: that route's
error is tested."""

import numpy as np
import pytest
import torch

from components.archs import check_arch, load_state
from components.formats import onnx_rt
from components.formats.onnx_rt import export_onnx
from components.models import build, count_params
from components.prune import prune_channels
from components.quantize import quantize_static_int8

pytestmark = pytest.mark.unit

FP32_ATOL = 1e-4  # ONNX Runtime against PyTorch, the same FP32 weights
INT8_AGREEMENT = 0.8  # share of argmax agreement of static INT8 with FP32 on the training inputs, after training

FACTORY = """
from torch import nn


def build_student(num_classes, input_shape):
    c = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, num_classes),
    )
"""

ROUTES = {  # arch: (kind, input shape, classes, width)
    "edgekd": ("image", (1, 8, 8), 10, 4),
    "dscnn": ("audio", (1, 10, 49), 12, 1),  # 10 MFCCs by 49 frames
    "resnet8": ("image", (3, 16, 16), 10, 1),  # 16 x 16 for speed: its pooling is adaptive
    "user_models:build_student": ("image", (3, 16, 16), 4, 1),
}


def _data(shape, classes, n=32):
    """Inputs whose class is told by their mean (something a short training can learn), seeded."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    x = torch.randn(n, *shape, generator=g) * 0.5 + (y.float() / classes).view(-1, *[1] * len(shape)) * 2
    return x, y


@pytest.mark.parametrize("arch", list(ROUTES))
def test_each_route_builds_trains_prunes_exports_and_quantizes(arch, tmp_path, monkeypatch):
    kind, shape, classes, width = ROUTES[arch]
    (tmp_path / "user_models.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = {"input_shape": list(shape)}
    model = build(kind, "student", spec, classes, width, seed=0, arch=arch)
    if arch == "resnet8":  # from a local weights file: the same network, another seed's weights
        other = build(kind, "student", spec, classes, width, seed=1, arch=arch)
        torch.save(other.state_dict(), tmp_path / "weights.pt")
        model = load_state(model, tmp_path / "weights.pt")
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    x, y = _data(shape, classes)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    model.train()
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses  # it learns

    pruned, report = prune_channels(model, x[:2], 0.25)
    assert report.params_after < report.params_before and count_params(pruned) == report.params_after
    path = export_onnx(pruned, x.numpy(), tmp_path / "m.onnx").path
    with torch.no_grad():
        expected = pruned.eval()(x).numpy()
    np.testing.assert_allclose(onnx_rt.predict(path, x.numpy()), expected, atol=FP32_ATOL, rtol=1e-3)
    int8 = quantize_static_int8(path, tmp_path / "q.onnx", x.numpy()).path
    agree = (onnx_rt.predict(int8, x.numpy()).argmax(1) == expected.argmax(1)).mean()
    assert agree >= INT8_AGREEMENT, agree


def test_reference_sizes_at_width_1():
    from components.prune import _size

    sizes = {
        arch: _size(
            build(kind, "student", {"input_shape": list(shape)}, n, 1, 0, arch=arch).eval(), torch.zeros(1, *shape)
        )
        for arch, (kind, shape, n) in {
            "dscnn": ("audio", (1, 10, 49), 12),
            "dscnn_l": ("audio", (1, 10, 49), 12),
            "resnet8": ("image", (3, 32, 32), 10),
        }.items()
    }
    macs = {a: m / 1e6 for a, (_, m) in sizes.items()}
    params = {a: p for a, (p, _) in sizes.items()}
    # MLPerf Tiny's references: DS-CNN-S 2.7 MMACs (23k parameters), DS-CNN-L 16.4 MMACs, ResNet-8 12.5 MMACs (78k)
    assert 2.5 < macs["dscnn"] < 3.0 and 20_000 < params["dscnn"] < 26_000, sizes
    assert 15.5 < macs["dscnn_l"] < 17.5, sizes
    assert 12.0 < macs["resnet8"] < 13.0 and 75_000 < params["resnet8"] < 80_000, sizes


@pytest.mark.parametrize(
    "arch, message",
    [
        ("dscnn-s", "expected 'edgekd'"),
        ("torchvision:", "expected 'edgekd'"),
        ("torchvision:mobilenet_v3_small", "torchvision cannot be imported here"),
        ("no_such_module:f", "cannot load the factory"),
    ],
)
def test_an_unknown_architecture_is_an_error_naming_it(arch, message):
    with pytest.raises(ValueError, match=message):
        build("image", "student", {"input_shape": [3, 32, 32]}, 10, 1, 0, arch=arch)


def test_a_weights_file_must_be_a_state_dict_that_fits(tmp_path):
    import pickle

    model = build("image", "student", {"input_shape": [3, 32, 32]}, 10, 1, 0, arch="resnet8")
    torch.save({"not": "weights", "fn": print}, tmp_path / "code.pt")
    with pytest.raises(ValueError, match="not a plain state dict; refusing"):
        load_state(model, tmp_path / "code.pt")
    (tmp_path / "p.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="not a plain state dict|not a state dict"):
        load_state(model, tmp_path / "p.pkl")
    from safetensors.torch import save_file

    narrower = build("image", "student", {"input_shape": [3, 32, 32]}, 10, 2, 0, arch="resnet8")
    save_file(narrower.state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="does not fit the architecture"):
        load_state(model, tmp_path / "w.safetensors")
    assert check_arch("resnet8") == "resnet8"
