"""`train_variant`: every method of the catalogue trains a real student on the digits, on the available device
(CUDA when present), with the same budget as the plain student."""

import numpy as np
import pytest
import torch

from components import kd
from components.augment import shift_augment
from components.data import Dataset
from components.distill import train_variant
from components.models import Ensemble, build
from components.teachers import logits, torch_teacher
from components.train import select_device

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def teacher(small_teacher):
    return small_teacher


def _kw(device, augment=None):
    return dict(epochs=2, lr=5e-3, batch_size=64, patience=2, seed=0, device=device, weight_decay=1e-4, augment=augment)


@pytest.mark.parametrize("method", sorted(kd.METHODS))
def test_every_method_trains_a_student_on_the_available_device(method, teacher, digits_splits, digits_spec):
    device = select_device("auto")
    train, val = digits_splits["train"], digits_splits["val"]
    fn = torch_teacher(teacher)
    pool = train.x[:300]
    for variant in kd.make(method).variants()[:2]:  # a sweep: its first two variants
        student, hist = train_variant(
            build("image", "student", digits_spec, 10, 4, seed=0),
            variant,
            train,
            val,
            teacher=fn,
            teacher_module=teacher,
            logits_of=lambda x: logits(fn, x),
            pool=pool,
            **_kw(device, shift_augment),
        )
        assert len(hist) == 2 and all(np.isfinite(h.train_loss) for h in hist), variant.label
        assert hist[-1].val_accuracy > 0.2, variant.label  # better than chance after two epochs
        assert next(student.parameters()).device.type == "cpu"


def test_fixed_inputs_use_the_cached_logits_not_the_teacher(teacher, digits_splits, digits_spec):
    train, val = digits_splits["train"], digits_splits["val"]
    calls, cached = [], []

    def counting(x):
        calls.append(len(x))
        return teacher(x)

    def logits_of(x):
        cached.append(len(x))
        return logits(torch_teacher(teacher), x)

    train_variant(
        build("image", "student", digits_spec, 10, 4, seed=0),
        kd.Variant("hinton", {}),
        train,
        val,
        teacher=counting,
        logits_of=logits_of,
        **_kw(torch.device("cpu")),
    )
    assert cached == [len(train)] and calls == []  # one pass over the train rows, never per batch
    train_variant(
        build("image", "student", digits_spec, 10, 4, seed=0),
        kd.Variant("hinton", {}),
        train,
        val,
        teacher=counting,
        logits_of=logits_of,
        **_kw(torch.device("cpu"), shift_augment),
    )
    assert len(calls) == 2 * int(np.ceil(len(train) / 64))  # augmented batches: the teacher sees each one


def test_plain_and_kd_share_the_budget_and_plain_ignores_the_teacher(digits_splits, digits_spec):
    train, val = digits_splits["train"], digits_splits["val"]
    a, ha = train_variant(
        build("image", "student", digits_spec, 10, 4, seed=0), kd.PLAIN, train, val, **_kw(torch.device("cpu"))
    )
    b, hb = train_variant(
        build("image", "student", digits_spec, 10, 4, seed=0),
        kd.Variant("hinton", {"alpha": 0.0}),
        train,
        val,
        teacher=lambda x: torch.zeros(len(x), 10),
        logits_of=lambda x: np.zeros((len(x), 10), np.float32),
        **_kw(torch.device("cpu")),
    )
    assert [h.model_dump(exclude={"seconds"}) for h in ha] == [
        h.model_dump(exclude={"seconds"}) for h in hb
    ]  # alpha 0 is the plain loss: the same budget gives the same student
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_hint_refuses_a_teacher_without_features(teacher, digits_splits, digits_spec):
    train = Dataset(digits_splits["train"].x[:64], digits_splits["train"].y[:64])
    ensemble = Ensemble([teacher, teacher])
    with pytest.raises(kd.KDConfigError, match="'hint' needs one PyTorch teacher"):
        train_variant(
            build("image", "student", digits_spec, 10, 4, seed=0),
            kd.Variant("hint", {}),
            train,
            digits_splits["val"],
            teacher=torch_teacher(ensemble),
            teacher_module=None,
            logits_of=lambda x: logits(torch_teacher(ensemble), x),
            **_kw(torch.device("cpu")),
        )
