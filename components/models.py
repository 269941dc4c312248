"""Teacher and student architectures per data kind, built from config."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from components.classifier import Classifier


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def _flat_size(body: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(body(torch.zeros(1, *input_shape)).numel())


def image_teacher(spec: dict, num_classes: int, width: int) -> Classifier:
    input_shape = tuple(spec["input_shape"])
    c = input_shape[0]
    body = nn.Sequential(
        *_conv(c, width),
        *_conv(width, 2 * width),
        nn.MaxPool2d(2),
        *_conv(2 * width, 4 * width),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    n = _flat_size(body, input_shape)
    head = nn.Sequential(nn.Dropout(0.3), nn.Linear(n, 128), nn.ReLU(), nn.Linear(128, num_classes))
    return Classifier(body, head)


def image_student(spec: dict, num_classes: int, width: int, depth: int = 3) -> Classifier:
    """Two 3x3 convs at full resolution before the first pooling, a third after it, a linear head: pooling right
    after the first conv throws away most of a small image, which a narrow student cannot afford.
    `depth` (the search's knob) keeps the first 1 or 2 conv blocks only: 1 is conv-pool, 2 is conv-pool-conv-pool;
    fewer ONNX nodes, so less of ONNX Runtime's fixed cost per node."""
    input_shape = tuple(spec["input_shape"])
    c = input_shape[0]
    if depth not in (1, 2, 3):
        raise ValueError(f"image student depth {depth}: expected 1, 2 or 3 conv blocks")
    if depth == 3:
        layers = [
            *_conv(c, width),
            *_conv(width, 2 * width),
            nn.MaxPool2d(2),
            *_conv(2 * width, 2 * width),
            nn.MaxPool2d(2),
        ]
    else:
        layers = [*_conv(c, width), nn.MaxPool2d(2)] + (
            [*_conv(width, 2 * width), nn.MaxPool2d(2)] if depth == 2 else []
        )
    body = nn.Sequential(*layers, nn.Flatten())
    return Classifier(body, nn.Sequential(nn.Linear(_flat_size(body, input_shape), num_classes)))


def tabular_teacher(spec: dict, num_classes: int, width: int) -> Classifier:
    """MLP n_features -> width -> width/2 -> classes. No BatchNorm: the training loop keeps a last batch of one
    row when the train split has one left over, which BatchNorm cannot train on."""
    n, half = spec["input_shape"][0], max(1, width // 2)
    body = nn.Sequential(
        nn.Linear(n, width), nn.ReLU(), nn.Dropout(0.2), nn.Linear(width, half), nn.ReLU(), nn.Dropout(0.2)
    )
    return Classifier(body, nn.Sequential(nn.Linear(half, num_classes)))


def tabular_student(spec: dict, num_classes: int, width: int) -> Classifier:
    """One hidden layer of `width` units: pruning removes hidden units, the output layer keeps its classes."""
    body = nn.Sequential(nn.Linear(spec["input_shape"][0], width), nn.ReLU())
    return Classifier(body, nn.Sequential(nn.Linear(width, num_classes)))


def _tconv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    """A temporal conv over (C, 1, frames) feature maps: kernel 3 along time, optional stride 2 along time."""
    return [
        nn.Conv2d(cin, cout, (1, 3), stride=(1, stride), padding=(0, 1), bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


def _mel_stem(spec: dict, width: int) -> list[nn.Module]:
    """A conv whose kernel spans every mel band (and 3 frames): (C, n_mels, frames) -> (width, 1, frames).
    Mel bands become channels, so every later layer is a cheap temporal conv (TC-ResNet's idea): a few MFLOPs
    per second of audio instead of the hundreds a 2-D CNN spends on the full spectrogram."""
    c, n_mels, _ = spec["input_shape"]
    return [nn.Conv2d(c, width, (n_mels, 3), padding=(0, 1), bias=False), nn.BatchNorm2d(width), nn.ReLU()]


def audio_teacher(spec: dict, num_classes: int, width: int) -> Classifier:
    """Mel stem, then two stages of temporal convs (width, then 2 * width channels), each halving the frame rate,
    global average pooling and a linear head."""
    body = nn.Sequential(
        *_mel_stem(spec, width),
        *_tconv(width, width),
        *_tconv(width, width, 2),
        *_tconv(width, 2 * width),
        *_tconv(2 * width, 2 * width, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return Classifier(body, nn.Sequential(nn.Dropout(0.2), nn.Linear(2 * width, num_classes)))


def audio_student(spec: dict, num_classes: int, width: int) -> Classifier:
    """Mel stem and two strided temporal convs, global average pooling, linear head."""
    body = nn.Sequential(
        *_mel_stem(spec, width),
        *_tconv(width, 2 * width, 2),
        *_tconv(2 * width, 2 * width, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return Classifier(body, nn.Sequential(nn.Linear(2 * width, num_classes)))


class ChannelsFirst(nn.Module):
    """(N, tokens, dim) embeddings -> (N, dim, tokens), the layout Conv1d reads."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class GlobalMaxMeanPool1d(nn.Module):
    """(N, C, tokens) -> (N, 2C): the max finds the most telling phrase anywhere in the message, the mean says how
    much of the message looks like it (a message of many mildly spammy words is spam too)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.amax(dim=2), x.mean(dim=2)], dim=1)


def _conv1d(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv1d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm1d(cout), nn.ReLU()]


def text_teacher(spec: dict, num_classes: int, width: int) -> Classifier:
    """Token ids -> embedding (2 * width) -> two 1-D convs (4 * width channels, kernels 5 and 3) -> max+mean over
    the message -> MLP head."""
    v, c = int(spec["vocab_size"]), 4 * width
    body = nn.Sequential(
        nn.Embedding(v, 2 * width, padding_idx=spec["pad_id"]),
        ChannelsFirst(),
        *_conv1d(2 * width, c, 5),
        *_conv1d(c, c, 3),
        GlobalMaxMeanPool1d(),
    )
    head = nn.Sequential(nn.Dropout(0.3), nn.Linear(2 * c, 64), nn.ReLU(), nn.Linear(64, num_classes))
    return Classifier(body, head)


def text_student(spec: dict, num_classes: int, width: int) -> Classifier:
    """Same token ids as the teacher (one preprocessing spec) -> embedding (width) -> one 1-D conv (2 * width,
    kernel 3) -> max+mean -> linear. The embedding table (vocab_size x width) is most of its size."""
    v = int(spec["vocab_size"])
    body = nn.Sequential(
        nn.Embedding(v, width, padding_idx=spec["pad_id"]),
        ChannelsFirst(),
        *_conv1d(width, 2 * width, 3),
        GlobalMaxMeanPool1d(),
    )
    return Classifier(body, nn.Sequential(nn.Linear(4 * width, num_classes)))


class Ensemble(nn.Module):
    """N classifiers acting as one: the mean of their logits. Exported to ONNX as a single graph."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


Builder = Callable[[dict, int, int], Classifier]  # (preprocessing spec, num_classes, width)
ARCHITECTURES: dict[str, dict[str, Builder]] = {
    "tabular": {"teacher": tabular_teacher, "student": tabular_student},
    "image": {"teacher": image_teacher, "student": image_student},
    "audio": {"teacher": audio_teacher, "student": audio_student},
    "text": {"teacher": text_teacher, "student": text_student},
}
DEPTHS: dict[tuple[str, str], tuple[int, ...]] = {("image", "student"): (1, 2, 3)}  # (kind, role) -> depths it builds


def build(
    kind: str,
    role: str,
    spec: dict,
    num_classes: int,
    width: int,
    seed: int,
    depth: int | None = None,
    arch: str = "edgekd",
) -> nn.Module:
    """Build the `role` ("teacher" or "student") network of data kind `kind` for inputs described by the
    preprocessing `spec` (components.preprocess), initialised from `seed`: edgekd's family for the kind, or the
    architecture `arch` names (components.archs). `depth` (None: the architecture's own) is taken by the builders
    that have one: see DEPTHS."""
    if arch != "edgekd":
        from components.archs import build_named

        if depth is not None:
            raise ValueError(f"architecture {arch!r} has no depth option (only edgekd's image student has)")
        torch.manual_seed(seed)
        return build_named(arch, spec, num_classes, width)
    if kind not in ARCHITECTURES:
        raise ValueError(f"no architectures for data kind {kind!r}; expected one of {sorted(ARCHITECTURES)}")
    if role not in ARCHITECTURES[kind]:
        raise ValueError(f"unknown model role {role!r}; expected one of {sorted(ARCHITECTURES[kind])}")
    if depth is not None and depth not in DEPTHS.get((kind, role), ()):
        raise ValueError(f"the {kind} {role} has no depth {depth}; depths: {list(DEPTHS.get((kind, role), ()))}")
    torch.manual_seed(seed)
    builder = ARCHITECTURES[kind][role]
    return builder(spec, num_classes, width) if depth is None else builder(spec, num_classes, width, depth=depth)


def output_layer(model: nn.Module) -> nn.Module:
    """The layer that produces the logits, which pruning must leave whole: a Classifier's head, else the model's
    last nn.Linear (torchvision's classifiers and most users' end in one)."""
    if isinstance(model, Classifier):
        return model.output_layer
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError(f"{type(model).__name__} has no nn.Linear output layer for pruning to leave whole")
    return linear[-1]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
