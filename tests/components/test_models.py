import pytest
import torch

from components.models import build, count_params

pytestmark = pytest.mark.unit

SPEC = {"input_shape": [1, 8, 8]}


@pytest.mark.parametrize(
    "depth, params",
    [
        # conv 1->4 (36) + BN (8) + head 4*4*4 -> 10 (650)
        (1, 36 + 8 + 650),
        # + conv 4->8 (288) + BN (16); head 8*2*2 -> 10 (330)
        (2, 36 + 8 + 288 + 16 + 330),
        # the default: conv 1->4, conv 4->8, conv 8->8 (36 + 288 + 576), BNs (8 + 16 + 16), head 8*2*2 -> 10 (330)
        (3, 36 + 288 + 576 + 8 + 16 + 16 + 330),
    ],
)
def test_image_student_depths_by_hand(depth, params):
    model = build("image", "student", SPEC, 10, 4, 0, depth=depth)
    assert count_params(model) == params
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_depth_none_is_the_architectures_own_and_other_kinds_refuse_one():
    assert count_params(build("image", "student", SPEC, 10, 4, 0)) == 1270  # depth 3, as documented
    with pytest.raises(ValueError, match="the tabular student has no depth 2"):
        build("tabular", "student", {"input_shape": [30]}, 2, 8, 0, depth=2)
    with pytest.raises(ValueError, match="no depth 4"):
        build("image", "student", SPEC, 10, 4, 0, depth=4)
