"""Cached teacher views (components/kd/views.py) and training on them (components.train.fit with `views`): the
student sees exactly the pool's views, and the cached loss is the online loss on the same views."""

import numpy as np
import pytest
import torch

from components import kd
from components.augment import ShiftFlip, shift_augment
from components.distill import train_variant
from components.kd.views import draw_view, draw_views, view_logits
from components.models import build
from components.teachers import logits, torch_teacher
from components.train import Objective, fit

pytestmark = pytest.mark.unit


def test_a_view_does_not_depend_on_the_pool_size_and_views_differ():
    aug = ShiftFlip(4, flip=True)
    small, big = draw_views(aug, 50, 3, seed=7), draw_views(aug, 50, 5, seed=7)
    assert torch.equal(small.params, big.params[:3])
    assert torch.equal(big.params[4], draw_view(aug, 50, 7, 4))
    assert not torch.equal(big.params[0], big.params[1])
    assert not torch.equal(draw_views(aug, 50, 3, seed=8).params, small.params)
    assert int(big.params[..., :2].min()) >= 0 and int(big.params[..., :2].max()) <= 8  # shifts within 0..2*4
    assert set(big.params[..., 2].unique().tolist()) == {0, 1}  # both mirrored and not


def test_the_split_augmentation_draws_as_the_one_call_did():
    x = torch.rand(16, 3, 8, 8)
    a = shift_augment(x, torch.Generator().manual_seed(3), max_shift=2, flip=True)
    aug = ShiftFlip(2, flip=True)
    b = aug.apply(x, aug.draw(16, torch.Generator().manual_seed(3)))
    assert torch.equal(a, b)


@pytest.mark.parametrize("method", ["hinton", "dkd", "dist"])
def test_on_the_same_views_the_cached_and_the_online_loss_agree(method, small_teacher, digits_splits):
    train = digits_splits["train"]
    x, y = train.x[:96], torch.from_numpy(train.y[:96])
    aug, fn = ShiftFlip(1), torch_teacher(small_teacher)
    views = draw_views(aug, len(x), 4, seed=0)
    cached = np.concatenate([view_logits(fn, x, aug, views.params[v]) for v in range(4)])
    student = build("image", "student", {"input_shape": list(x.shape[1:])}, 10, 4, seed=0)
    m = kd.make(method)
    pick = torch.randint(0, 4, (len(x),), generator=torch.Generator().manual_seed(1))
    rows = torch.arange(len(x))
    xb = aug.apply(torch.from_numpy(x), views.params[pick, rows])
    cached_loss, _ = m.objective(student, kd.TeacherSignal(fn, cached), xb)(student, xb, y, pick * len(x) + rows, None)
    online_loss, _ = m.objective(student, kd.TeacherSignal(fn), xb)(student, xb, y, None, None)
    assert abs(cached_loss.item() - online_loss.item()) < 1e-5
    # and a wrong view would not agree: the keys select what they say
    other = (pick + 1) % 4 * len(x) + rows
    wrong, _ = m.objective(student, kd.TeacherSignal(fn, cached), xb)(student, xb, y, other, None)
    assert abs(wrong.item() - online_loss.item()) > 1e-4


def _kw(epochs: int = 2, **extra) -> dict:
    """`fit`'s settings in these tests: a short budget on the CPU, shifts of one pixel, `extra` on top."""
    return (
        dict(
            epochs=epochs,
            lr=5e-3,
            batch_size=64,
            patience=epochs,
            seed=0,
            device=torch.device("cpu"),
            augment=ShiftFlip(1),
        )
        | extra
    )


class _Recording(Objective):
    """Plain CE that records each batch's inputs and keys."""

    def __init__(self):
        self.batches = []

    def __call__(self, model, x, y, idx, gen):
        self.batches.append((x.detach().clone(), idx))
        return super().__call__(model, x, y, idx, gen)


def test_fit_on_a_pool_trains_on_exactly_its_views(digits_splits, digits_spec):
    train, val = digits_splits["train"], digits_splits["val"]
    aug = ShiftFlip(1)
    views = draw_views(aug, len(train.y), 3, seed=0)
    rec = _Recording()
    model = build("image", "student", digits_spec, 10, 4, seed=0)
    fit(model, train, val, **_kw(1, batch_size=128, objective=rec, augment=aug, views=views))
    n, seen = len(train.y), 0
    for xb, keys in rec.batches:
        v, rows = keys // n, keys % n
        assert int(v.max()) < 3
        expect = aug.apply(torch.from_numpy(train.x[rows.numpy()]), views.params[v, rows])
        assert torch.equal(xb, expect)
        seen += len(keys)
    assert seen == n and len({int(k) % n for _, keys in rec.batches for k in keys}) == n


def test_a_kd_student_on_cached_views_never_calls_the_teacher_while_training(small_teacher, digits_splits, digits_spec):
    train, val = digits_splits["train"], digits_splits["val"]
    fn, calls = torch_teacher(small_teacher), []

    def counting(x):
        calls.append(len(x))
        return fn(x)

    def views_of(x, aug):
        views = draw_views(aug, len(x), 2, seed=0)
        return views, np.concatenate([view_logits(fn, x, aug, views.params[v]) for v in range(2)])

    _, hist = train_variant(
        build("image", "student", digits_spec, 10, 4, seed=0),
        kd.Variant("dkd"),
        train,
        val,
        teacher=counting,
        teacher_module=small_teacher,
        logits_of=lambda x: logits(fn, x),
        views_of=views_of,
        **_kw(),
    )
    assert calls == [] and len(hist) == 2 and hist[-1].val_accuracy > 0.2


def test_bf16_training_keeps_fp32_weights_and_returns_a_contiguous_model(digits_splits, digits_spec):
    train, val = digits_splits["train"], digits_splits["val"]
    model, hist = fit(build("image", "student", digits_spec, 10, 4, seed=0), train, val, **_kw(precision="bf16"))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.is_contiguous() for p in model.parameters())
    assert hist[-1].val_accuracy > 0.5
    again, _ = fit(build("image", "student", digits_spec, 10, 4, seed=0), train, val, **_kw(precision="bf16"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="precision"):
        fit(model, train, val, **_kw(1, precision="auto"))
