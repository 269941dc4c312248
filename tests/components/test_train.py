import numpy as np
import pytest
import torch

from components.augment import shift_augment
from components.data import Dataset
from components.models import build
from components.train import NonFiniteLossError, fit, select_device, torch_settings

pytestmark = pytest.mark.unit

SPEC = {"kind": "image", "input_shape": [1, 8, 8], "input_dtype": "float32", "scale": 16.0}


def _tiny(n=64, seed=0):
    r = np.random.default_rng(seed)
    return Dataset(r.random((n, 1, 8, 8), dtype=np.float32), r.integers(0, 10, n))


def test_nan_loss_fails_fast_naming_epoch_and_batch():
    data = _tiny()
    data.x[40] = np.nan  # lands in some batch of the first epoch
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, batch \d"):
        fit(
            build("image", "student", SPEC, 10, 4, 0),
            data,
            _tiny(16, 1),
            epochs=3,
            lr=1e-3,
            batch_size=16,
            patience=3,
            seed=0,
            device=torch.device("cpu"),
        )


def test_early_stopping_and_seeded_reproducibility():
    kw = dict(epochs=50, lr=1e-3, batch_size=16, patience=2, seed=0, device=torch.device("cpu"))
    # Random labels: validation accuracy stalls, so training stops long before 50 epochs.
    m1, h1 = fit(build("image", "student", SPEC, 10, 4, 0), _tiny(), _tiny(32, 1), **kw)
    m2, h2 = fit(build("image", "student", SPEC, 10, 4, 0), _tiny(), _tiny(32, 1), **kw)
    assert len(h1) < 50
    assert _numbers(h1) == _numbers(h2)  # the same numbers; only the epochs' wall times differ
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_training_uses_its_own_thread_count_whatever_the_process_has():
    """The weights depend on `threads`, not on the process's torch thread count, which is set back afterwards."""
    kw = dict(epochs=3, lr=1e-2, batch_size=16, patience=3, seed=0, device=torch.device("cpu"), threads=1)
    weights = []
    before = torch.get_num_threads()
    try:
        for process_threads in (1, 2):
            torch.set_num_threads(process_threads)
            m, _ = fit(build("image", "teacher", SPEC, 10, 8, 0), _tiny(), _tiny(32, 1), **kw)
            assert torch.get_num_threads() == process_threads
            weights.append(m.state_dict())
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    with torch_settings(3, deterministic=True):
        assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (3, True)
    assert torch.get_num_threads() == before and not torch.are_deterministic_algorithms_enabled()


def test_teacher_learns_digits(digits_splits):
    _, hist = fit(
        build("image", "teacher", SPEC, 10, 8, 0),
        digits_splits["train"],
        digits_splits["val"],
        epochs=3,
        lr=3e-3,
        batch_size=64,
        patience=3,
        seed=0,
        device=torch.device("cpu"),
    )
    assert hist[-1].val_accuracy > 0.8
    assert set(hist[0].model_dump()) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"}
    assert all(h.seconds > 0 for h in hist)


def _numbers(history) -> list[dict]:
    return [h.model_dump(exclude={"seconds"}) for h in history]


def test_select_device():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            select_device("cuda")


def test_shift_augment_moves_pixels_by_at_most_one():
    x = torch.zeros(32, 1, 8, 8)
    x[:, 0, 4, 4] = 1.0
    out = shift_augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    pos = out[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 8, pos % 8
    assert ((rows - 4).abs() <= 1).all() and ((cols - 4).abs() <= 1).all()
    assert len(set(pos.tolist())) > 1  # shifts differ between samples
    assert torch.allclose(out.sum((1, 2, 3)), torch.ones(32))
