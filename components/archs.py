"""Architectures by name, besides edgekd's own families (components/models.py): MLPerf Tiny's reference classifiers,
torchvision's builders, and a factory in the user's project.

- `dscnn`: MLPerf Tiny's keyword-spotting DS-CNN for MFCC input, laid out as edgekd's audio features are, (1,
  coefficients, frames): 10 x 49 in the reference, whose (frames, coefficients) layout this transposes: a 4x10
  conv (4 coefficients by 10 frames) with stride 2, four depthwise-separable blocks, average pooling, a linear
  head. At width 1 it is DS-CNN-S (64 channels, 2.7 MMACs at 10 x 49); `width` multiplies the channels.
- `dscnn_l`: the same with 172 channels at width 1 (DS-CNN-L, 16.4 MMACs at 10 x 49).
- `resnet8`: MLPerf Tiny's image-classification ResNet-8 for (3, 32, 32) images: a 3x3 conv of 16 channels and
  three residual stages of 16, 32 and 64 channels (the last two strided), average pooling, a linear head. At width
  1 it is the reference (78k parameters, 12.5 MMACs); `width` multiplies the channels.
- `torchvision:NAME`: torchvision's builder NAME (`torchvision.models.get_model`) with `num_classes` classes and
  no pretrained weights (nothing is downloaded); `width` does not apply. torchvision is not in the lock: PyPI's
  build does not import beside torch 2.13.0's CPU wheel, so this route works only where the user's environment has
  a torchvision that does.
- `MODULE:FUNCTION`: a factory in the user's project, called as FUNCTION(num_classes=..., input_shape=(...)); it
  returns an `nn.Module`.

Any of them can start from a local weights file (`load_state`): a state dict saved by torch.save (loaded with
`weights_only=True`, never unpickling code) or a safetensors file.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from components.classifier import Classifier

EDGEKD = "edgekd"


class UnsafeWeightsError(ValueError):
    """A weights file that is not plain tensors: torch.load with weights_only refused to unpickle it."""


REFERENCE = ("dscnn", "dscnn_l", "resnet8")


def _bn_relu(conv: nn.Module, c: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(c), nn.ReLU()]


def _dscnn(spec: dict, num_classes: int, channels: int, blocks: int = 4) -> Classifier:
    c_in = spec["input_shape"][0]
    layers = _bn_relu(nn.Conv2d(c_in, channels, (4, 10), stride=2, padding=(1, 5), bias=False), channels)
    layers.append(nn.Dropout(0.2))
    for _ in range(blocks):
        layers += _bn_relu(nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False), channels)
        layers += _bn_relu(nn.Conv2d(channels, channels, 1, bias=False), channels)
    layers += [nn.Dropout(0.4), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), nn.Sequential(nn.Linear(channels, num_classes)))


def dscnn(spec: dict, num_classes: int, width: int = 1) -> Classifier:
    """DS-CNN-S at width 1 (64 channels)."""
    return _dscnn(spec, num_classes, 64 * width)


def dscnn_l(spec: dict, num_classes: int, width: int = 1) -> Classifier:
    """DS-CNN-L at width 1 (172 channels)."""
    return _dscnn(spec, num_classes, 172 * width)


class Residual(nn.Module):
    """Two 3x3 convs (the first strided where the stage downsamples) added to the input, or to its 1x1 projection
    where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.convs = nn.Sequential(
            *_bn_relu(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), cout),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride=stride)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.convs(x) + self.shortcut(x))


def resnet8(spec: dict, num_classes: int, width: int = 1) -> Classifier:
    """MLPerf Tiny's ResNet-8 at width 1 (16, 32, 64 channels)."""
    c = [16 * width, 32 * width, 64 * width]
    body = nn.Sequential(
        *_bn_relu(nn.Conv2d(spec["input_shape"][0], c[0], 3, padding=1, bias=False), c[0]),
        Residual(c[0], c[0], 1),
        Residual(c[0], c[1], 2),
        Residual(c[1], c[2], 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return Classifier(body, nn.Sequential(nn.Linear(c[2], num_classes)))


BUILDERS = {"dscnn": dscnn, "dscnn_l": dscnn_l, "resnet8": resnet8}


def check_arch(arch: str) -> str:
    """`arch` if it names an architecture this module can build, else a ValueError saying what it expects."""
    if arch == EDGEKD or arch in BUILDERS:
        return arch
    prefix, sep, name = arch.partition(":")
    if sep and prefix and name and name.isidentifier():
        return arch
    raise ValueError(
        f"architecture {arch!r}: expected {EDGEKD!r}, one of {sorted(BUILDERS)}, `torchvision:NAME` or "
        "`MODULE:FUNCTION` (a factory in your project)"
    )


def build_named(arch: str, spec: dict, num_classes: int, width: int) -> nn.Module:
    """The network `arch` names (not edgekd's families: components.models.build builds those) for inputs described
    by the preprocessing `spec`."""
    check_arch(arch)
    if arch in BUILDERS:
        return BUILDERS[arch](spec, num_classes, width)
    prefix, _, name = arch.partition(":")
    if prefix == "torchvision":
        return _torchvision(name, num_classes)
    return _factory(prefix, name, num_classes, tuple(spec["input_shape"]))


def _torchvision(name: str, num_classes: int) -> nn.Module:
    try:
        import torchvision
    except Exception as e:  # absent, or PyPI's build beside the CPU torch: "operator torchvision::nms does not exist"
        raise ValueError(
            f"architecture torchvision:{name}: torchvision cannot be imported here ({e}); it is not in edgekd's "
            "lock, because no torchvision build loads beside torch 2.13.0's CPU wheel. Build the network in a factory "
            "of your project instead (`arch: MODULE:FUNCTION`), where torchvision works for you"
        ) from None

    if name not in torchvision.models.list_models(torchvision.models):
        raise ValueError(f"torchvision has no classification builder {name!r}")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def _factory(module: str, function: str, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    try:
        fn = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"architecture {module}:{function}: cannot load the factory: {e}") from None
    model = fn(num_classes=num_classes, input_shape=input_shape)
    if not isinstance(model, nn.Module):
        raise ValueError(f"architecture {module}:{function} returned {type(model).__name__}, not a torch nn.Module")
    return model


def load_state(model: nn.Module, path: str | Path) -> nn.Module:
    """`model` with the weights of a local file: a safetensors file, or a state dict saved by torch.save (loaded with
    weights_only=True). Every parameter and buffer must match by name and shape."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as e:  # an unpickling refusal or a file that is not a torch save
            raise UnsafeWeightsError(
                f"weights file {path}: not a plain state dict; refusing to unpickle it ({e})"
            ) from None
    if not isinstance(state, dict):
        raise ValueError(f"weights file {path}: holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"weights file {path} does not fit the architecture: {e}") from None
    return model
