"""Every supported format, end to end through the real flow on data a test writes in that format, then
`edgekd predict` on 20 raw test inputs in a fresh process, which must agree with the pipeline's own ORT
evaluation of the registered model; and a new user's own data, added by `edgekd data add` without options,
registers a model on its first `edgekd run`."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.e2e

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"  # the cases from it run where it is

FAST = {
    "teacher": {"epochs": 3, "patience": 3},
    "student": {"epochs": 3},
    "prune": {"finetune_epochs": 1},
    "quantize": {"calibration_samples": 32},
    "benchmark": {"warmup_runs": 2, "timed_runs": 20},
    "gate": {"min_accuracy": 0.0, "max_accuracy_drop": 1.0, "max_p95_ms": 100.0, "max_size_kb": 10000.0},
}


def _write_digits_png(folder: Path) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for i, (img, t) in enumerate(zip(d.images, d.target)):
        (folder / str(t)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 15).astype(np.uint8)).save(folder / str(t) / f"{i}.png")


def _cancer_frame() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer(as_frame=True)
    return d.frame.rename(columns={"target": "diagnosis"})  # 0 malignant, 1 benign


def _write_fsdd_folders(ext: Path) -> None:
    """FSDD re-labelled by sub-folders: <digit>/<speaker>_<index>.wav, indices 0-7 of every digit and speaker."""
    for f in sorted((SHARED / "fsdd" / "recordings").glob("*.wav")):
        digit, speaker, index = f.stem.split("_")
        if int(index) < 8:
            (ext / "fsdd_folders" / digit).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, ext / "fsdd_folders" / digit / f"{speaker}_{index}.wav")


def _write_sms_label_last(ext: Path) -> None:
    """The SMS collection rewritten as `text<TAB>label` with numeric labels (1 spam, 0 ham)."""
    lines = (SHARED / "sms_spam" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines()
    out = [f"{text}\t{1 if label == 'spam' else 0}" for label, text in (ln.split("\t", 1) for ln in lines)]
    (ext / "sms_last.tsv").write_text("\n".join(out) + "\n", encoding="utf-8")


AUDIO_OPTIONS = {"label_from": "folder", "sample_rate": 8000, "seconds": 1.0, "n_fft": 256, "hop": 128, "n_mels": 40}

CASES = {
    "digits_png": dict(
        write=lambda ext: _write_digits_png(ext / "digits_png"),
        section={"kind": "image", "source": "digits_png", "classes": [str(i) for i in range(10)]},
    ),
    "cancer_csv": dict(
        write=lambda ext: _cancer_frame().to_csv(ext / "cancer.csv", sep=";", index=False),
        section={
            "kind": "tabular",
            "source": "cancer.csv",
            "classes": ["benign", "malignant"],
            "options": {"label_column": "diagnosis", "delimiter": ";", "label_map": {0: "malignant", 1: "benign"}},
        },
    ),
    "cancer_parquet": dict(
        write=lambda ext: _cancer_frame().to_parquet(ext / "cancer.parquet"),
        section={
            "kind": "tabular",
            "source": "cancer.parquet",
            "classes": ["benign", "malignant"],
            "options": {"label_column": "diagnosis", "label_map": {0: "malignant", 1: "benign"}},
        },
    ),
}
if SHARED.is_dir():
    CASES["fsdd_folders"] = dict(
        write=_write_fsdd_folders,
        section={
            "kind": "audio",
            "source": "fsdd_folders",
            "options": AUDIO_OPTIONS,
            "validation": {"min_rows_per_class": 5, "max_class_imbalance": 3.0},
            "classes": [str(i) for i in range(10)],
        },
    )
    CASES["sms_last"] = dict(
        write=_write_sms_label_last,
        section={
            "kind": "text",
            "source": "sms_last.tsv",
            "classes": ["ham", "spam"],
            "validation": {"min_rows_per_class": 20, "max_class_imbalance": 8.0},
            "options": {"label_column": 1, "text_column": 0, "label_map": {0: "ham", 1: "spam"}},
        },
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory, pipeline_project, small_params):
    params = small_params()
    params["datasets"] = {
        name: {"root": "data/external", "options": {}, "overrides": FAST} | case["section"]
        for name, case in CASES.items()
    }
    params["dataset"] = next(iter(CASES))
    with pipeline_project(tmp_path_factory.mktemp("formats"), params) as root:
        for case in CASES.values():
            case["write"](root / "data" / "external")
        yield root


def _raw_inputs(root: Path, name: str, cfg, test, out: Path) -> list[str]:
    """The raw samples behind the first 20 prepared test rows (matched by content hash), written as a device
    would receive them: files for images and audio, the text itself, CSV rows for tabular data."""
    from components.data import get_kind
    from components.data.base import duplicate_hashes
    from flows.data.layout import load_raw_data

    raw = load_raw_data(root, cfg)
    by_hash = dict(zip(duplicate_hashes(get_kind(cfg.data.kind), raw.samples, cfg.data.options), range(len(raw))))
    picks = [by_hash[h] for h in test.meta["hash"][:20]]
    args = []
    for k, i in enumerate(picks):
        s = raw.samples[i]
        if cfg.data.kind == "image":
            from PIL import Image

            f = out / f"{name}_{k}.png"
            Image.fromarray(np.asarray(s).astype(np.uint8)).save(f)
            args.append(str(f))
        elif cfg.data.kind == "tabular":
            args.append(",".join(repr(float(v)) for v in s))
        elif cfg.data.kind == "text":
            args.append(s)
        else:
            from scipy.io import wavfile

            f = out / f"{name}_{k}.wav"
            wavfile.write(f, int(raw.info.get("sample_rate", 8000)), np.asarray(s, dtype=np.float32))
            args.append(str(f))
    return args


@pytest.mark.parametrize("name", list(CASES))
def test_format_runs_end_to_end_and_predicts_raw_inputs(project, name, tmp_path):
    from mlflow import MlflowClient

    from components.config import load_config
    from components.formats import onnx_rt
    from flows.data.layout import load_splits
    from flows.pipelines.run import pipeline
    from flows.tracking.registry import model_file

    outcome = pipeline(project_dir=str(project), dataset=name)
    assert outcome.selected is not None
    c = MlflowClient()
    mv = c.get_model_version_by_alias(name, "staging")
    assert str(mv.version) == outcome.version
    cfg = load_config(project / "params.yaml", name)
    test = load_splits(project, cfg.data.name)["test"]
    expected = onnx_rt.predict(model_file(c, name, str(mv.version), tmp_path / "model"), test.x[:20]).argmax(1)
    inputs = _raw_inputs(project, name, cfg, test, tmp_path)
    code = (
        "import sys; from flows.cli import main; rc = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'predict imported torch'; sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "--project-dir", str(project), "predict", name, *inputs],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    labels = [line.split("\t")[0] for line in proc.stdout.strip().splitlines()]
    assert labels == [cfg.data.classes[i] for i in expected]


# --- a new user's own data: `data add` with no options, then a first run -----------------------------------------


def _write_xrays(path: Path) -> None:
    """A MedMNIST-style .npz (its own train/val/test, labels (n, 1), uint8 12x12 images): class 1 has a bright
    patch in the lower right, class 0 in the upper left, over noise."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 240), ("val", 80), ("test", 80)):
        y = np.arange(n) % 2
        x = rng.integers(0, 90, (n, 12, 12))
        for i, label in enumerate(y):
            x[i, 6:, 6:] += 120 * label
            x[i, :6, :6] += 120 * (1 - label)
        arrays |= {f"{split}_images": x.astype(np.uint8), f"{split}_labels": y[:, None].astype(np.uint8)}
    np.savez(path, **arrays)


def _write_reviews(path: Path) -> None:
    """400 distinct sentences, label last (`sentence<TAB>0|1`): the adjectives say the label."""
    rng = np.random.default_rng(0)
    words = {
        "1": ["great", "lovely", "superb", "wonderful", "brilliant", "delightful"],
        "0": ["awful", "boring", "terrible", "dreadful", "dull", "painful"],
    }
    subjects = ["the film", "this movie", "the story", "the acting", "the show", "my evening", "the ending", "the cast"]
    extras = ["today", "again", "overall", "honestly", "really", "at times", "for me", "as always"]
    lines = set()
    while len(lines) < 400:
        label = str(len(lines) % 2)
        a, b = rng.choice(words[label], 2, replace=False)
        lines.add(f"{rng.choice(subjects)} was {a} and {b} {rng.choice(extras)}\t{label}")
    path.write_text("\n".join(sorted(lines)) + "\n")


NEW = {
    "xrays": (_write_xrays, "image", "xrays.npz", "splits kept as the source has them: train, val, test"),
    "reviews": (_write_reviews, "text", "reviews.tsv", "label column 1 inferred (2 distinct values), text column 0"),
}


@pytest.mark.parametrize("name", list(NEW))
def test_own_data_added_without_options_registers_on_its_first_run(project, name, tmp_path, capsys, cli):
    write, kind, source, said = NEW[name]
    write(project / "data" / "external" / source)

    assert cli(project, "data", "add", name, "--kind", kind, "--source", source) == 0
    assert said in capsys.readouterr().out
    assert cli(project, "run", "--dataset", name, "--json", str(tmp_path / "out.json")) == 0

    run = json.loads((tmp_path / "out.json").read_text())
    metric, registered = run["gate_metric"], run["registered"]["candidate"]
    assert run["candidates"][registered]["val"][metric] >= run["candidates"]["plain_fp32"]["val"][metric]
    prepared = json.loads((project / "data" / "prepared" / name / "summary.json").read_text())
    if kind == "image":  # exactly the file's own splits, and the model card says so
        from mlflow import MlflowClient

        assert prepared["splits_from_source"] == ["train", "val", "test"] and prepared["duplicates_dropped"] == 0
        assert prepared["counts"] == {"train": 240, "val": 80, "test": 80}
        card = MlflowClient().get_model_version(name, run["registered"]["version"]).description
        assert (
            "- Splits: train 240, val 80, test 80; duplicates dropped: 0; train, val, test as the source split "
            "them" in card
        )
