"""Every KD method of the catalogue against values computed by hand (plain Python math, not torch)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from components import kd
from components.config import DistillConfig
from components.data import Dataset
from components.kd import features, pool

pytestmark = pytest.mark.unit


def softmax(z, t=1.0):
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


S, T_, Y = [[1.0, 0.0]], [[0.0, 1.0]], [0]


def test_hinton_matches_hand_computed_value():
    # s = [1, 0], t = [0, 1], T = 2, alpha = 0.5, label 0: 0.5 * 4 * KL(softmax(t/2) || softmax(s/2)) + 0.5 * CE.
    expected = 0.5 * 4 * kl(softmax([0, 1], 2), softmax([1, 0], 2)) + 0.5 * -math.log(softmax([1, 0])[0])
    got = kd.make("hinton", {"temperature": 2, "alpha": 0.5}).loss(torch.tensor(S), torch.tensor(T_), torch.tensor(Y))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.40163, abs=1e-4)


def test_hinton_alpha_zero_is_cross_entropy_and_linear_decay_ends_there():
    s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    ce = nn.functional.cross_entropy(s, y).item()
    assert kd.make("hinton", {"alpha": 0.0}).loss(s, t, y).item() == pytest.approx(ce)
    decay = kd.make("hinton", {"alpha": 0.8, "schedule": "linear_decay"})
    decay.set_epoch(11, 11)  # the last epoch
    assert decay.loss(s, t, y).item() == pytest.approx(ce)
    decay.set_epoch(6, 11)
    assert decay.weight() == pytest.approx(0.4)


def test_dkd_matches_hand_computed_value():
    s, t, y = [2.0, 1.0, 0.0], [1.0, 2.0, 0.0], 0
    ps, pt = softmax(s), softmax(t)
    b_s, b_t = [ps[0], 1 - ps[0]], [pt[0], 1 - pt[0]]
    tckd = kl(b_t, b_s)  # target vs rest, T = 1
    nckd = kl(softmax(t[1:]), softmax(s[1:]))  # among the non-target classes
    ce = -math.log(ps[0])
    expected = ce + 1.0 * tckd + 3.0 * nckd
    method = kd.make("dkd", {"alpha": 1.0, "beta": 3.0, "temperature": 1.0, "warmup_epochs": 0})
    got = method.loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert (tckd, nckd) == (pytest.approx(0.3698, abs=1e-4), pytest.approx(0.0671, abs=1e-4))


def test_dkd_warmup_ramps_the_kd_terms():
    s, t, y = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([0])
    method = kd.make("dkd", {"temperature": 1.0, "warmup_epochs": 4})
    ce = nn.functional.cross_entropy(s, y).item()
    objective = method.objective(None, kd.TeacherSignal(lambda x: x), None)
    objective.start_epoch(4, 100)  # what fit calls at each epoch reaches the method
    full = method.loss(s, t, y).item() - ce
    objective.start_epoch(1, 100)
    assert method.loss(s, t, y).item() - ce == pytest.approx(full / 4, rel=1e-5)
    objective.start_epoch(9, 100)
    assert method.loss(s, t, y).item() - ce == pytest.approx(full, rel=1e-5)


def pearson(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return cov / (math.sqrt(sum((x - ma) ** 2 for x in a)) * math.sqrt(sum((y - mb) ** 2 for y in b)))


def test_dist_matches_hand_computed_value():
    s = [[2.0, 0.0, 1.0], [0.0, 1.0, 3.0]]
    t = [[1.0, 0.0, 2.0], [0.5, 2.0, 1.0]]
    y = [0, 2]
    ps, pt = [softmax(r) for r in s], [softmax(r) for r in t]
    inter = 1 - sum(pearson(a, b) for a, b in zip(ps, pt)) / 2  # per sample, across classes
    cols = lambda m: [[row[j] for row in m] for j in range(3)]  # noqa: E731
    intra = 1 - sum(pearson(a, b) for a, b in zip(cols(ps), cols(pt))) / 3  # per class, across the batch
    ce = -(math.log(ps[0][0]) + math.log(ps[1][2])) / 2
    expected = ce + 2.0 * inter + 0.5 * intra
    got = kd.make("dist", {"beta": 2.0, "gamma": 0.5, "temperature": 1.0}).loss(
        torch.tensor(s), torch.tensor(t), torch.tensor(y)
    )
    assert got.item() == pytest.approx(expected, rel=1e-4)
    # At temperature T both relations are taken between softmax(z / T) and scaled by T^2.
    ps4, pt4 = [softmax(r, 4) for r in s], [softmax(r, 4) for r in t]
    inter4 = 1 - sum(pearson(a, b) for a, b in zip(ps4, pt4)) / 2
    intra4 = 1 - sum(pearson(a, b) for a, b in zip(cols(ps4), cols(pt4))) / 3
    got4 = kd.make("dist", {"temperature": 4.0}).loss(torch.tensor(s), torch.tensor(t), torch.tensor(y))
    assert got4.item() == pytest.approx(ce + 16 * (inter4 + intra4), rel=1e-4)


def test_dist_is_zero_beyond_ce_when_relations_match():
    # A student whose probabilities are an affine image of the teacher's has Pearson correlation 1 everywhere.
    t = torch.tensor([[1.0, 0.0, 2.0], [0.5, 2.0, 1.0]])
    y = torch.tensor([0, 1])
    method = kd.make("dist")
    assert method.loss(t, t, y).item() == pytest.approx(nn.functional.cross_entropy(t, y).item(), abs=1e-4)


def test_function_matching_is_kl_only_and_mixes_views_within_the_batch():
    s, t, y = torch.tensor(S), torch.tensor(T_), torch.tensor([1])  # the label is ignored
    method = kd.make("function_matching", {"temperature": 2.0})
    assert method.loss(s, t, y).item() == pytest.approx(4 * kl(softmax([0, 1], 2), softmax([1, 0], 2)), rel=1e-6)
    x = torch.eye(6).reshape(6, 1, 6)  # six distinct one-hot rows
    mixed = pool.mixup(x, torch.Generator().manual_seed(0), alpha=1.0)
    rows = mixed.reshape(6, 6)
    assert torch.allclose(rows.sum(1), torch.ones(6))  # convex combinations
    assert ((rows > 0).sum(1) <= 2).all()  # of at most two samples
    assert not torch.equal(rows, torch.eye(6))
    assert torch.equal(pool.mixup(x, torch.Generator(), alpha=0.0), x)


def test_pseudo_label_labels_the_pool_with_the_teachers_argmax_above_min_confidence():
    train = Dataset(np.zeros((2, 3), np.float32), np.array([1, 0]))
    pool = np.arange(9, dtype=np.float32).reshape(3, 3)
    pool_logits = np.array([[2.0, 0.0], [0.0, 0.1], [0.0, 3.0]], np.float32)  # top probs 0.881, 0.525, 0.953
    rows = kd.make("pseudo_label", {"min_confidence": 0.6}).training_set(train, pool, pool_logits)
    assert rows.y.tolist() == [1, 0, 0, 1]  # train's labels, then pool rows 0 and 2
    assert np.array_equal(rows.x[2:], pool[[0, 2]])
    with pytest.raises(kd.KDConfigError, match="needs an unlabelled pool.*datasets.NAME.unlabelled"):
        kd.make("pseudo_label").training_set(train, None, None)


def test_pseudo_label_trains_with_its_base_loss_and_schedule():
    s, t, y = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([0])
    method = kd.make("pseudo_label", {"base": "dkd", "base_options": {"temperature": 1.0, "warmup_epochs": 4}})
    alone = kd.make("dkd", {"temperature": 1.0, "warmup_epochs": 4})
    for m in (method, alone):
        m.set_epoch(2, 10)
    assert method.loss(s, t, y).item() == pytest.approx(alone.loss(s, t, y).item())
    assert method.variants()[0].options["base_options"]["beta"] == 2.0  # the base's defaults are spelled out
    with pytest.raises(kd.KDConfigError, match=r"distill\.dkd\.betta"):
        kd.make("pseudo_label", {"base": "dkd", "base_options": {"betta": 1}})


def test_adaptive_expands_to_a_grid_with_the_plain_student_once():
    variants = kd.make("adaptive", {"temperatures": [1, 4], "alphas": [0.0, 0.5], "schedules": ["constant"]}).variants()
    assert [v.label for v in variants] == [
        "plain",
        "hinton(alpha=0.5,schedule=constant,temperature=1.0)",
        "hinton(alpha=0.5,schedule=constant,temperature=4.0)",
    ]
    assert variants[0].build() is None


def test_hint_matches_levels_by_relative_depth_and_sums_projected_mse():
    assert features.matched_levels(2, 3, 2) == [(0, 1), (1, 2)]
    assert features.matched_levels(3, 5, 1) == [(2, 4)]
    assert features.matched_levels(1, 4, 3) == [(0, 3)]  # never more levels than the shallower net has
    method = kd.make("hint", {"weight": 0.5})
    proj = nn.ModuleList([nn.Linear(2, 2)])
    with torch.no_grad():
        proj[0].weight.copy_(torch.eye(2))
        proj[0].bias.zero_()
    pairs = [(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]]))]
    assert method.feature_loss(pairs, proj).item() == pytest.approx(0.5 * ((1 - 0) ** 2 + (2 - 4) ** 2) / 2)
    # Maps of different sizes are average-pooled to the smaller one: a 4x4 map of ones against a 2x2 map of twos.
    s, t = features._align(torch.ones(1, 1, 4, 4), torch.full((1, 1, 2, 2), 2.0))
    assert s.shape == t.shape == (1, 1, 2, 2) and torch.equal(s, torch.ones(1, 1, 2, 2))


def test_options_are_typed_and_bad_keys_are_named():
    with pytest.raises(kd.KDConfigError, match=r"distill\.hinton\.temprature"):
        kd.make("hinton", {"temprature": 2})
    with pytest.raises(kd.KDConfigError, match=r"distill\.dkd\.beta"):
        kd.make("dkd", {"beta": -1})
    with pytest.raises(kd.KDConfigError, match=r"'hintn' is not a KD method"):
        kd.resolve(DistillConfig(method="hintn"))
    with pytest.raises(kd.KDConfigError, match=r"unknown keys \['dkdd'\]"):
        kd.resolve(DistillConfig(method="dkd", dkdd={"beta": 1}))
    assert [v.label for v in kd.resolve(DistillConfig(method=["hinton", "dist"], hinton={"alpha": 0.9}))] == [
        "hinton(alpha=0.9,schedule=constant,temperature=2.0)",
        "dist(beta=1.0,gamma=1.0,temperature=4.0)",
    ]


def test_every_method_is_described_for_the_readme():
    catalogue = kd.describe()
    assert (
        set(catalogue)
        == set(kd.METHODS)
        == {"hinton", "dkd", "dist", "hint", "function_matching", "pseudo_label", "adaptive"}
    )
    for name, entry in catalogue.items():
        assert entry["doc"] and all(desc for _, desc in entry["options"].values()), name
