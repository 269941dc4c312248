"""Untrusted files: weights that would run code when unpickled, weights changed after their stage saved them,
and dataset paths that leave the data root are refused before anything is executed or read."""

import os

import pytest
import torch

from components.config import DIGITS, DataConfig, PipelineConfig
from components.data import DataError, get_kind
from components.formats.base import Artifact, artifact_info, file_sha256
from components.models import build
from flows.data.stages import ingest
from flows.tasks.weights import UntrustedFileError, load_weights

pytestmark = pytest.mark.unit


class _Payload:
    """Unpickling this calls os.mkdir(marker): what a booby-trapped weights file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_weights_that_would_run_code_are_refused_without_running_it(tmp_path, digits_spec):
    marker, weights = tmp_path / "pwned", tmp_path / "weights.pt"
    torch.save({"layer.weight": _Payload(marker)}, weights)
    with pytest.raises(UntrustedFileError, match="not a plain state dict; refusing to unpickle it"):
        load_weights(build("image", "student", digits_spec, 10, 16, 0), artifact_info(weights))
    assert not marker.exists()


def test_weights_changed_since_their_stage_saved_them_are_refused(tmp_path, digits_spec):
    weights = tmp_path / "weights.pt"
    torch.save({"x": torch.zeros(2)}, weights)
    recorded = file_sha256(weights)
    torch.save({"x": torch.ones(2)}, weights)
    with pytest.raises(UntrustedFileError, match="sha256 differs"):
        load_weights(
            build("image", "student", digits_spec, 10, 16, 0),
            Artifact(path=str(weights), size_bytes=weights.stat().st_size, sha256=recorded),
        )


@pytest.mark.parametrize("source", ["../secret.npz", "sub/../../secret.npz", "/etc/passwd", "link/secret.npz"])
def test_dataset_paths_outside_the_data_root_are_refused_before_reading(tmp_path, monkeypatch, source):
    root = tmp_path / "project"
    (root / "data" / "external" / "sub").mkdir(parents=True)
    (root / "data" / "secret.npz").write_bytes(b"not yours")
    (root / "data" / "external" / "link").symlink_to(root / "data")  # a symlink out of the root
    kind = get_kind("image")
    reads = []
    monkeypatch.setattr(type(kind), "load", lambda self, *a: reads.append(a))
    cfg = PipelineConfig(data=DataConfig(name="digits", **(DIGITS | {"source": source})))
    with pytest.raises(DataError, match="outside the data root"):
        ingest(root, cfg)
    assert reads == []
