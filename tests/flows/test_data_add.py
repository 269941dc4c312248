"""`edgekd data add` and `data remove` on a real git + DVC project: good data is recorded, bad data leaves nothing
behind, every format of the README's "Add your own dataset" is added from files written here, a removal undoes an
addition byte for byte, and a refused removal changes nothing. (Removing a dataset that has run, with its
registered model still predicting, is in test_kd_e2e.)"""

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from scipy.io import wavfile

from components.config import load_config
from flows.data.add import NEW_DATASET_GATE

pytestmark = pytest.mark.integration  # git and DVC run as subprocesses


def _project(root: Path, repo: Path) -> Path:
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    shutil.copy(repo / "params.yaml", root)
    (root / "data" / "external").mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    return root


@pytest.fixture
def project(tmp_path, repo):
    return _project(tmp_path, repo)


def _state(root: Path) -> dict:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.parts and ".dvc" not in p.parts[:1]
    }


def test_add_npz_records_section_and_dvc_file(project, capsys, cli):
    np.savez(project / "data" / "external" / "mine.npz", x=np.random.rand(30, 6, 6) * 255, y=np.arange(30) % 3)
    assert cli(project, "data", "add", "mine", "--kind", "image", "--source", "mine.npz") == 0
    section = yaml.safe_load((project / "params.yaml").read_text())["datasets"]["mine"]
    assert section == {
        "kind": "image",
        "root": "data/external",
        "source": "mine.npz",
        "classes": ["0", "1", "2"],
        "options": {},
        "overrides": {"gate": NEW_DATASET_GATE},
    }
    assert (project / "data" / "external" / "mine.npz.dvc").is_file()
    assert "30 samples" in capsys.readouterr().out


def test_a_new_dataset_gets_a_relative_gate_the_user_can_tighten_and_built_in_gates_stay(project, cli):
    np.savez(project / "data" / "external" / "mine.npz", x=np.random.rand(30, 6, 6) * 255, y=np.arange(30) % 3)
    built_in = {n: load_config(project / "params.yaml", n).gate for n in ("digits", "breast_cancer", "sms_spam")}

    assert (
        cli(
            project,
            "data",
            "add",
            "mine",
            "--kind",
            "image",
            "--source",
            "mine.npz",
            "--set",
            "gate.max_accuracy_drop=0.01",
            "--set",
            "student.width=8",
        )
        == 0
    )

    cfg = load_config(project / "params.yaml", "mine")
    assert (cfg.gate.min_accuracy, cfg.gate.plain_tolerance, cfg.gate.max_accuracy_drop) == (0.0, 0.0, 0.01)
    assert cfg.student.width == 8
    assert load_config(project / "params.yaml", "mine", {"gate.min_accuracy": 0.95}).gate.min_accuracy == 0.95
    assert {n: load_config(project / "params.yaml", n).gate for n in built_in} == built_in
    assert "# data add's gate for a new dataset" in (project / "params.yaml").read_text()


def _sentences(n: int) -> list[str]:
    return [f"message {i} says the {('cat', 'dog', 'owl')[i % 3]} ran off" for i in range(n)]


@pytest.mark.parametrize(
    "lines,options,message",
    [
        (
            [f"{s}\t{i % 2}" for i, s in enumerate(_sentences(2500))],
            ["label_column=0", "text_column=1"],
            r"label_column 0 cannot hold the labels: it holds 2500 distinct values in 2500 rows",
        ),
        (
            [f"{i}\t{s}" for i, s in enumerate(_sentences(2500))],
            [],
            r"no column can hold the labels \(column 0: it holds 2499 distinct values .*label_column=COLUMN",
        ),
    ],
    ids=["given_label_column", "no_label_column"],
)
def test_a_label_column_of_thousands_of_values_is_refused_and_nothing_changes(
    project, capsys, lines, options, message, cli
):
    (project / "data" / "external" / "s.tsv").write_text("\n".join(lines) + "\n")
    before = _state(project)

    assert (
        cli(
            project,
            "data",
            "add",
            "s",
            "--kind",
            "text",
            "--source",
            "s.tsv",
            *(a for o in options for a in ("--option", o)),
        )
        == 3
    )

    err = capsys.readouterr().err
    assert "nothing was added" in err
    assert __import__("re").search(message, err), err
    assert _state(project) == before


@pytest.mark.parametrize(
    "setup,source,message",
    [
        (None, "../../outside.npz", "outside the data root"),
        (None, "missing.npz", "does not exist"),
        ("corrupt", "bad.npz", "not a readable .npz"),
        ("nolabels", "bad.npz", r"missing arrays \['y'\]"),
    ],
)
def test_bad_data_is_refused_and_nothing_changes(project, capsys, setup, source, message, cli):
    if setup == "corrupt":
        (project / "data" / "external" / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    elif setup == "nolabels":
        np.savez(project / "data" / "external" / "bad.npz", x=np.zeros((3, 4, 4)))
    before = _state(project)
    assert cli(project, "data", "add", "bad", "--kind", "image", "--source", source) == 3
    err = capsys.readouterr().err
    assert "nothing was added" in err
    assert __import__("re").search(message, err), err
    assert _state(project) == before


def test_labels_outside_given_classes_are_refused(project, capsys, cli):
    np.savez(project / "data" / "external" / "m.npz", x=np.zeros((4, 4, 4)), y=np.array([0, 1, 2, 2]))
    before = _state(project)
    assert cli(project, "data", "add", "m", "--kind", "image", "--source", "m.npz", "--classes", "0,1") == 3
    assert "labels ['2'] are not among --classes" in capsys.readouterr().err
    assert _state(project) == before


def test_add_with_unlabelled_pool_records_it_and_dvc_adds_it(project, capsys, cli):
    external = project / "data" / "external"
    np.savez(external / "mine.npz", x=np.random.rand(30, 6, 6) * 255, y=np.arange(30) % 3)
    (external / "pool" / "batch1").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((6, 6), 10 * i, np.uint8)).save(external / "pool" / "batch1" / f"{i}.png")

    assert cli(project, "data", "add", "mine", "--kind", "image", "--source", "mine.npz", "--unlabelled", "pool") == 0

    section = yaml.safe_load((project / "params.yaml").read_text())["datasets"]["mine"]
    assert section["unlabelled"] == "pool" and section["source"] == "mine.npz"
    assert (external / "pool.dvc").is_file() and (external / "mine.npz.dvc").is_file()
    assert "30 samples, classes ['0', '1', '2'], 4 unlabelled samples" in capsys.readouterr().out


@pytest.mark.parametrize(
    "setup,pool,message",
    [
        ("corrupt", "pool", r"pool/0\.png: unreadable or corrupt image"),
        ("size", "pool", r"unlabelled images of shape \(5, 5\) differ from the labelled images' \(6, 6\)"),
        (None, "../../outside", "outside the data root"),
        (None, "missing", "does not exist"),
        (None, ".", "overlaps the labelled source"),
    ],
)
def test_bad_pool_is_refused_and_nothing_changes(project, capsys, setup, pool, message, cli):
    external = project / "data" / "external"
    np.savez(external / "mine.npz", x=np.random.rand(30, 6, 6) * 255, y=np.arange(30) % 3)
    (external / "pool").mkdir()
    if setup == "corrupt":
        (external / "pool" / "0.png").write_bytes(b"\x89PNG garbage")
    elif setup == "size":
        np.savez(external / "pool" / "p.npz", x=np.zeros((2, 5, 5)))
        pool = "pool/p.npz"
    before = _state(project)

    assert cli(project, "data", "add", "mine", "--kind", "image", "--source", "mine.npz", "--unlabelled", pool) == 3

    err = capsys.readouterr().err
    assert "nothing was added" in err
    assert __import__("re").search(message, err), err
    assert _state(project) == before


def test_remove_undoes_add_and_keeps_the_users_files(project, capsys, cli):
    external = project / "data" / "external"
    np.savez(external / "mine.npz", x=np.random.rand(30, 6, 6) * 255, y=np.arange(30) % 3)
    np.savez(external / "pool.npz", x=np.random.rand(5, 6, 6) * 255)
    params_before = (project / "params.yaml").read_bytes()
    assert (
        cli(project, "data", "add", "mine", "--kind", "image", "--source", "mine.npz", "--unlabelled", "pool.npz") == 0
    )
    assert (external / ".gitignore").read_text().split() == ["/mine.npz", "/pool.npz"]

    assert cli(project, "data", "remove", "mine", "--yes") == 0

    assert (project / "params.yaml").read_bytes() == params_before  # comments, quotes and nulls as they were
    assert sorted(p.name for p in external.iterdir()) == ["mine.npz", "pool.npz"]  # no .dvc, no .gitignore
    out = capsys.readouterr().out
    assert "to remove: params.yaml datasets.mine, data/external/mine.npz.dvc, data/external/pool.npz.dvc" in out
    assert f"kept on disk: {external / 'mine.npz'}" in out and f"kept on disk: {external / 'pool.npz'}" in out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "name,yes,stdin,message",
    [
        ("nope", True, None, r"unknown dataset 'nope'; .*params.yaml defines \['breast_cancer', 'cifar10', "),
        (
            "digits",
            True,
            None,
            r"'digits' is the default dataset \(`dataset` in .*\); set `dataset:` to one of "
            r"\['breast_cancer', 'fsdd', 'sms_spam', 'cifar10', 'cifar10_full'\] first",
        ),
        ("breast_cancer", False, io.StringIO("y\n"), "no terminal to confirm on; pass --yes"),
        ("breast_cancer", False, _Terminal("n\n"), None),
    ],
    ids=["unknown", "default", "no-terminal", "declined"],
)
def test_refused_removal_changes_nothing(project, capsys, monkeypatch, name, yes, stdin, message, cli):
    (project / "data" / "prepared" / name).mkdir(parents=True)
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", stdin)
    before = _state(project)

    assert cli(project, "data", "remove", name, *["--yes"] * yes) == 4

    out, err = capsys.readouterr()
    assert "nothing was removed" in out + err
    if message:
        assert __import__("re").search(message, err), err
    assert _state(project) == before


# --- every format of the README, as a user has it ----------------------------------------------------------------


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 5), value, np.uint8)).save(path)


def _wav(path: Path, hz: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, 8000, (0.3 * np.sin(2 * np.pi * hz * np.arange(800) / 8000)).astype(np.float32))


def _lines(path: Path, row) -> None:
    path.write_text(
        "".join(
            row(i, f"message {i} about the {('cat', 'dog')[i % 2]}", ("no", "yes")[i % 2]) + "\n" for i in range(12)
        )
    )


SPLIT_SIZES = {"train": 4, "val": 2, "test": 2}
FORMATS = {  # name: (write into data/external, kind, source, --option values, classes found, what data add says)
    "npz": (
        lambda e: np.savez(e / "a.npz", x=np.arange(120).reshape(8, 3, 5), y=np.arange(8)[:, None] % 2),
        "image",
        "a.npz",
        [],
        ["0", "1"],
        "8 samples",
    ),
    "medmnist": (
        lambda e: np.savez(
            e / "m.npz",
            **{
                f"{s}_{a}": np.arange(n * 60).reshape(n, 4, 5, 3) % 256 if a == "images" else np.arange(n)[:, None] % 2
                for s, n in SPLIT_SIZES.items()
                for a in ("images", "labels")
            },
        ),
        "image",
        "m.npz",
        [],
        ["0", "1"],
        "splits kept as the source has them: train, val, test",
    ),
    "png_classes": (
        lambda e: [_png(e / "png" / c / f"{i}.png", 10 * i + k) for k, c in enumerate("ab") for i in range(3)],
        "image",
        "png",
        [],
        ["a", "b"],
        "6 samples",
    ),
    "png_splits": (
        lambda e: [
            _png(e / "pngs" / s / c / f"{i}.png", 30 * i + 10 * k + j)
            for j, s in enumerate(SPLIT_SIZES)
            for k, c in enumerate("ab")
            for i in range(2)
        ],
        "image",
        "pngs",
        [],
        ["a", "b"],
        "splits kept as the source has them: train, val, test",
    ),
    "wav_names": (
        lambda e: [_wav(e / "wav" / f"{d}_ann_{i}.wav", 300 + 50 * d + 10 * i) for d in (0, 1) for i in range(3)],
        "audio",
        "wav",
        [],
        ["0", "1"],
        "6 samples",
    ),
    "wav_classes": (
        lambda e: [
            _wav(e / "wavc" / c / f"{i}.wav", 300 + 50 * k + 10 * i) for k, c in enumerate("ab") for i in range(3)
        ],
        "audio",
        "wavc",
        ["label_from=folder"],
        ["a", "b"],
        "6 samples",
    ),
    "wav_splits": (
        lambda e: [
            _wav(e / "wavs" / s / c / f"{i}.wav", 300 + 50 * k + 10 * i + j)
            for j, s in enumerate(SPLIT_SIZES)
            for k, c in enumerate("ab")
            for i in range(2)
        ],
        "audio",
        "wavs",
        ["label_from=folder"],
        ["a", "b"],
        "splits kept as the source has them",
    ),
    "text_label_first": (
        lambda e: _lines(e / "first.tsv", lambda i, t, y: f"{y}\t{t}"),
        "text",
        "first.tsv",
        [],
        ["no", "yes"],
        "label column 0 inferred (2 distinct values), text column 1",
    ),
    "text_label_last": (
        lambda e: _lines(e / "last.tsv", lambda i, t, y: f"{t}\t{y}"),
        "text",
        "last.tsv",
        [],
        ["no", "yes"],
        "label column 1 inferred (2 distinct values), text column 0",
    ),
    "text_with_id": (
        lambda e: _lines(e / "ids.tsv", lambda i, t, y: f"{i}\t{t}\t{y}"),
        "text",
        "ids.tsv",
        [],
        ["no", "yes"],
        "label column 2 inferred (2 distinct values), text column 1",
    ),
    "text_csv": (
        lambda e: (e / "t.csv").write_text("text,label\n" + "".join(f'"hi, {i} {i % 3}",{i % 2}\n' for i in range(12))),
        "text",
        "t.csv",
        [],
        ["0", "1"],
        "text column 0, delimiter ',', quotechar '\"', line 1 is a header",
    ),
    "tabular_csv": (
        lambda e: pd.DataFrame({"size": np.linspace(1, 2, 12), "kind": ["u", "v", "w"] * 4}).to_csv(
            e / "t2.csv", index=False
        ),
        "tabular",
        "t2.csv",
        [],
        ["u", "v", "w"],
        "label column 'kind' inferred",
    ),
    "tabular_parquet": (
        lambda e: pd.DataFrame({"label": [0, 1] * 6, "size": np.linspace(1, 2, 12)}).to_parquet(e / "t.parquet"),
        "tabular",
        "t.parquet",
        [],
        ["0", "1"],
        "label column 'label' (by its name)",
    ),
}


@pytest.fixture(scope="module")
def formats_project(tmp_path_factory, repo):
    return _project(tmp_path_factory.mktemp("formats"), repo)


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_readme_format_is_added_and_read_back_as_recorded(formats_project, capsys, name, cli):
    from components.data import get_kind
    from flows.data.layout import resolve_source

    write, kind, source, options, classes, said = FORMATS[name]
    write(formats_project / "data" / "external")

    assert (
        cli(
            formats_project,
            "data",
            "add",
            name,
            "--kind",
            kind,
            "--source",
            source,
            *(a for o in options for a in ("--option", o)),
        )
        == 0
    )

    assert said in capsys.readouterr().out
    cfg = load_config(formats_project / "params.yaml", name)
    raw = get_kind(kind).load(resolve_source(formats_project, cfg), cfg.data.options)  # what ingest will read
    assert cfg.data.classes == classes == sorted(set(raw.labels))
