import math

import pytest
import torch

from components.distill import kd_loss


def test_kd_loss_matches_hand_computed_value():
    # s = [1, 0], t = [0, 1], T = 2, alpha = 0.5, label 0.
    # softmax(t/T) = [1/(1+e^0.5), e^0.5/(1+e^0.5)]; log_softmax(s/T) = [0.5, 0] - log(e^0.5 + 1)
    z = math.log(1 + math.exp(0.5))
    p_t = [1 / (1 + math.exp(0.5)), math.exp(0.5) / (1 + math.exp(0.5))]
    log_p_t = [0 - z, 0.5 - z]
    log_p_s = [0.5 - z, 0 - z]
    kl = sum(p * (a - b) for p, a, b in zip(p_t, log_p_t, log_p_s))  # = 0.1224...
    ce = math.log(1 + math.exp(-1))  # -log softmax([1, 0])[0]
    expected = 0.5 * 4 * kl + 0.5 * ce
    got = kd_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0]), 2.0, 0.5)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.40163, abs=1e-4)


def test_alpha_zero_is_plain_cross_entropy():
    s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    assert kd_loss(s, t, y, 3.0, 0.0).item() == pytest.approx(torch.nn.functional.cross_entropy(s, y).item())


def test_kd_term_vanishes_when_student_equals_teacher():
    s = torch.randn(5, 4)
    assert kd_loss(s, s.clone(), torch.zeros(5, dtype=torch.long), 4.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_term_scales_with_temperature_squared():
    # With T large, KL(T) * T^2 tends to a finite limit: the loss stays on the scale of CE, not 1/T^2 of it.
    s, t, y = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([0])
    assert kd_loss(s, t, y, 8.0, 1.0).item() == pytest.approx(kd_loss(s, t, y, 16.0, 1.0).item(), rel=0.05)
