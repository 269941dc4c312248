"""`edgekd data add` and `data remove` on a real git + DVC project: good data is recorded, bad data leaves nothing
behind, a removal undoes an addition byte for byte, and a refused removal changes nothing. (Removing a dataset that
has run, with its registered model still predicting, is in test_kd_e2e.)"""
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from flows.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    shutil.copy(REPO / "params.yaml", tmp_path)
    (tmp_path / "data" / "external").mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    return tmp_path


def _state(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".git" not in p.parts and ".dvc" not in p.parts[:1]}


def test_add_npz_records_section_and_dvc_file(project, capsys):
    np.savez(project / "data" / "external" / "mine.npz", x=np.random.rand(30, 6, 6) * 255, y=np.arange(30) % 3)
    assert main(["--project-dir", str(project), "data", "add", "mine", "--kind", "image", "--source", "mine.npz"]) == 0
    section = yaml.safe_load((project / "params.yaml").read_text())["datasets"]["mine"]
    assert section == {"kind": "image", "root": "data/external", "source": "mine.npz", "classes": ["0", "1", "2"],
                       "options": {}}
    assert (project / "data" / "external" / "mine.npz.dvc").is_file()
    assert "30 samples" in capsys.readouterr().out


@pytest.mark.parametrize("setup,source,message", [
    (None, "../../outside.npz", "outside the data root"),
    (None, "missing.npz", "does not exist"),
    ("corrupt", "bad.npz", "not a readable .npz"),
    ("nolabels", "bad.npz", r"missing arrays \['y'\]"),
])
def test_bad_data_is_refused_and_nothing_changes(project, capsys, setup, source, message):
    if setup == "corrupt":
        (project / "data" / "external" / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    elif setup == "nolabels":
        np.savez(project / "data" / "external" / "bad.npz", x=np.zeros((3, 4, 4)))
    before = _state(project)
    assert main(["--project-dir", str(project), "data", "add", "bad", "--kind", "image", "--source", source]) == 3
    err = capsys.readouterr().err
    assert "nothing was added" in err
    assert __import__("re").search(message, err), err
    assert _state(project) == before


def test_labels_outside_given_classes_are_refused(project, capsys):
    np.savez(project / "data" / "external" / "m.npz", x=np.zeros((4, 4, 4)), y=np.array([0, 1, 2, 2]))
    before = _state(project)
    assert main(["--project-dir", str(project), "data", "add", "m", "--kind", "image", "--source", "m.npz",
                 "--classes", "0,1"]) == 3
    assert "labels ['2'] are not among --classes" in capsys.readouterr().err
    assert _state(project) == before


def test_add_with_unlabelled_pool_records_it_and_dvc_adds_it(project, capsys):
    external = project / "data" / "external"
    np.savez(external / "mine.npz", x=np.random.rand(30, 6, 6) * 255, y=np.arange(30) % 3)
    (external / "pool" / "batch1").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((6, 6), 10 * i, np.uint8)).save(external / "pool" / "batch1" / f"{i}.png")

    assert main(["--project-dir", str(project), "data", "add", "mine", "--kind", "image", "--source", "mine.npz",
                 "--unlabelled", "pool"]) == 0

    section = yaml.safe_load((project / "params.yaml").read_text())["datasets"]["mine"]
    assert section["unlabelled"] == "pool" and section["source"] == "mine.npz"
    assert (external / "pool.dvc").is_file() and (external / "mine.npz.dvc").is_file()
    assert "30 samples, classes ['0', '1', '2'], 4 unlabelled samples" in capsys.readouterr().out


@pytest.mark.parametrize("setup,pool,message", [
    ("corrupt", "pool", r"pool/0\.png: unreadable or corrupt image"),
    ("size", "pool", r"unlabelled images of shape \(5, 5\) differ from the labelled images' \(6, 6\)"),
    (None, "../../outside", "outside the data root"),
    (None, "missing", "does not exist"),
    (None, ".", "overlaps the labelled source"),
])
def test_bad_pool_is_refused_and_nothing_changes(project, capsys, setup, pool, message):
    external = project / "data" / "external"
    np.savez(external / "mine.npz", x=np.random.rand(30, 6, 6) * 255, y=np.arange(30) % 3)
    (external / "pool").mkdir()
    if setup == "corrupt":
        (external / "pool" / "0.png").write_bytes(b"\x89PNG garbage")
    elif setup == "size":
        np.savez(external / "pool" / "p.npz", x=np.zeros((2, 5, 5)))
        pool = "pool/p.npz"
    before = _state(project)

    assert main(["--project-dir", str(project), "data", "add", "mine", "--kind", "image", "--source", "mine.npz",
                 "--unlabelled", pool]) == 3

    err = capsys.readouterr().err
    assert "nothing was added" in err
    assert __import__("re").search(message, err), err
    assert _state(project) == before


def test_remove_undoes_add_and_keeps_the_users_files(project, capsys):
    external = project / "data" / "external"
    np.savez(external / "mine.npz", x=np.random.rand(30, 6, 6) * 255, y=np.arange(30) % 3)
    np.savez(external / "pool.npz", x=np.random.rand(5, 6, 6) * 255)
    params_before = (project / "params.yaml").read_bytes()
    assert main(["--project-dir", str(project), "data", "add", "mine", "--kind", "image", "--source", "mine.npz",
                 "--unlabelled", "pool.npz"]) == 0
    assert (external / ".gitignore").read_text().split() == ["/mine.npz", "/pool.npz"]

    assert main(["--project-dir", str(project), "data", "remove", "mine", "--yes"]) == 0

    assert (project / "params.yaml").read_bytes() == params_before  # comments, quotes and nulls as they were
    assert sorted(p.name for p in external.iterdir()) == ["mine.npz", "pool.npz"]  # no .dvc, no .gitignore
    out = capsys.readouterr().out
    assert "to remove: params.yaml datasets.mine, data/external/mine.npz.dvc, data/external/pool.npz.dvc" in out
    assert f"kept on disk: {external / 'mine.npz'}" in out and f"kept on disk: {external / 'pool.npz'}" in out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("name,yes,stdin,message", [
    ("nope", True, None, r"unknown dataset 'nope'; .*params.yaml defines \['breast_cancer', 'digits'"),
    ("digits", True, None, r"'digits' is the default dataset \(`dataset` in .*\); set `dataset:` to one of "
                           r"\['breast_cancer', 'fsdd', 'sms_spam'\] first"),
    ("breast_cancer", False, io.StringIO("y\n"), "no terminal to confirm on; pass --yes"),
    ("breast_cancer", False, _Terminal("n\n"), None),
], ids=["unknown", "default", "no-terminal", "declined"])
def test_refused_removal_changes_nothing(project, capsys, monkeypatch, name, yes, stdin, message):
    (project / "data" / "prepared" / name).mkdir(parents=True)
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", stdin)
    before = _state(project)

    assert main(["--project-dir", str(project), "data", "remove", name] + ["--yes"] * yes) == 4

    out, err = capsys.readouterr()
    assert "nothing was removed" in out + err
    if message:
        assert __import__("re").search(message, err), err
    assert _state(project) == before
