"""KD through the product, end to end on tiny configs: `edgekd bench kd` runs every method of the catalogue against
the equal-budget plain student; a teacher brought as an ONNX file (written here) teaches in `edgekd run`; and
pseudo-labelling learns from an unlabelled pool added with `edgekd data add --unlabelled`, and `edgekd data remove`
takes that dataset out again while its registered model keeps predicting."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from components import kd

pytestmark = pytest.mark.e2e

TINY = {"distill": {"method": "hinton", "adaptive": {"temperatures": [2.0], "alphas": [0.0, 0.5]}}}


@pytest.fixture(scope="module")
def params(small_params):
    """params(**sections): the small params with a tiny KD sweep, `sections` merged on top."""

    def of(**sections) -> dict:
        return small_params(**(TINY | sections))

    return of


@pytest.fixture(scope="module")
def project(tmp_path_factory, pipeline_project, params):
    root = tmp_path_factory.mktemp("kd")
    with pipeline_project(root, params()):
        yield root


def test_bench_runs_every_method_against_plain_and_logs_the_table(project, capsys, cli):
    from mlflow import MlflowClient

    out = project / "bench.json"
    assert (
        cli(project, "bench", "kd", "--widths", "2", "--seeds", "1", "--labelled-fraction", "0.5", "--json", str(out))
        == 0
    )
    text = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["dataset"] == "digits" and result["labelled_fraction"] == 0.5 and result["skipped"] == {}
    assert result["conditions"]["cpu"] and f"({result['conditions']['cpu']})" in text  # the kernels that trained
    assert 0.5 < result["teacher"]["test_accuracy"] <= 1 and 0.5 < result["teacher"]["val_accuracy"] <= 1
    methods = {r["method"] for r in result["rows"]}
    assert methods == {"plain"} | set(kd.METHODS)  # every method of the catalogue ran, pseudo_label on the pool
    for r in result["rows"]:
        assert (r["width"], r["seed"]) == (2, 0) and 0 <= r["val_accuracy"] <= 1 and 0 <= r["test_accuracy"] <= 1
    adaptive = next(r for r in result["rows"] if r["method"] == "adaptive")
    assert adaptive["variant"] in ("plain", "hinton(alpha=0.5,schedule=constant,temperature=2.0)")
    plain = next(r for r in result["rows"] if r["method"] == "plain")
    chosen = next(r for r in result["rows"] if r["method"] == result["chosen"]["2"])  # picked on val, not test
    assert chosen["val_accuracy"] == max(r["val_accuracy"] for r in result["rows"] if r["method"] != "plain")
    assert "recovery" in text and "<- chosen on val" in text and "plain" in text and "val - plain" in text
    # the parent MLflow run holds the table, the rows and the accuracy-vs-width plot
    c = MlflowClient()
    run = c.search_runs([c.get_experiment_by_name("digits").experiment_id], "tags.stage = 'bench_kd'")[0]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["w2.plain.test_mean"] == pytest.approx(plain["test_accuracy"])
    assert {"accuracy_vs_width.png", "bench_kd.json", "bench_kd.txt"} <= {
        a.path for a in c.list_artifacts(run.info.run_id)
    }


def test_bench_says_which_methods_the_data_cannot_serve(project, capsys, cli):
    out = project / "full.json"
    assert (
        cli(
            project,
            "bench",
            "kd",
            "--widths",
            "2",
            "--seeds",
            "1",
            "--methods",
            "pseudo_label,hinton",
            "--json",
            str(out),
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert "needs an unlabelled pool" in result["skipped"]["pseudo_label"]
    assert {r["method"] for r in result["rows"]} == {"plain", "hinton"}
    assert cli(project, "bench", "kd", "--methods", "hintn") == 1
    assert "unknown ['hintn']" in capsys.readouterr().err


def _onnx_teacher(path: Path) -> None:
    """A teacher trained outside edgekd (here: a few epochs on all of sklearn's digits), handed over as ONNX."""
    import torch
    from sklearn.datasets import load_digits

    from components.data import Dataset
    from components.formats.onnx_rt import export_onnx
    from components.models import build
    from components.train import fit

    d = load_digits()
    data = Dataset((d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64))
    net, _ = fit(
        build("image", "teacher", {"input_shape": [1, 8, 8]}, 10, 8, seed=3),
        data,
        data,
        epochs=3,
        lr=3e-3,
        batch_size=64,
        patience=3,
        seed=3,
        device=torch.device("cpu"),
    )
    export_onnx(net, data.x, path)


def test_the_bench_gives_the_same_numbers_serially_and_on_dask_workers(project, cli, tmp_path):
    """Each student trains on `train.threads` threads from its seed, whether one after another in this process or
    side by side on Dask worker processes: the rows are the same, number for number. Over two seeds and two splits,
    each method's paired differences against plain come with their interval over splits (the test items' variance
    included) and verdict."""
    import shutil

    args = ("bench", "kd", "--widths", "2", "--seeds", "2", "--splits", "2", "--methods", "hinton")
    out = {}
    for workers in ("1", "2"):
        shutil.rmtree(project / ".edgekd" / "artifacts" / "student", ignore_errors=True)  # trained anew each time
        assert cli(project, *args, "--workers", workers, "--json", str(tmp_path / f"{workers}.json")) == 0
        out[workers] = json.loads((tmp_path / f"{workers}.json").read_text())
    assert len(out["1"]["rows"]) == 8 and out["2"]["rows"] == out["1"]["rows"]
    assert out["2"]["table"] == out["1"]["table"]
    result = out["1"]
    assert {(r["seed"], r["split"]) for r in result["rows"]} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert result["conditions"]["threads"] == 1 and result["conditions"]["splits"] == 2
    assert set(result["teachers"]) == {"0", "1"}
    hinton = next(c for c in result["table"] if c["method"] == "hinton")
    plain = {(r["seed"], r["split"]): r for r in result["rows"] if r["method"] == "plain"}
    for p in hinton["pairs"]:
        kd_row = next(
            r for r in result["rows"] if (r["method"], r["seed"], r["split"]) == ("hinton", p["seed"], p["split"])
        )
        assert p["test_diff"] == pytest.approx(
            kd_row["test_accuracy"] - plain[(p["seed"], p["split"])]["test_accuracy"]
        )
    gain = hinton["test_gain"]  # over the 2 splits, with every student's test items
    assert gain["n"] == 2 and gain["lo"] <= gain["mean"] <= gain["hi"]
    assert gain["items"] > 0 and {len(r["test_correct"]) for r in result["rows"]} == {gain["items"]}
    assert hinton["family"] == 1 and hinton["holm_p"] == pytest.approx(gain["p"])  # Holm over one method: its own p
    assert hinton["verdict"] == ("gain" if gain["lo"] > 0 else "loss" if gain["hi"] < 0 else "no measurable gain")


def test_an_onnx_teacher_brought_by_the_user_teaches_and_is_measured_like_a_candidate(
    tmp_path, capsys, cli, pipeline_project, params
):
    from mlflow import MlflowClient

    from components.formats import runtime
    from components.formats.base import file_sha256
    from flows.data.layout import load_splits

    (tmp_path / "teachers").mkdir()
    _onnx_teacher(tmp_path / "teachers" / "mine.onnx")
    # No augmentation: the inputs KD sees are fixed, so the teacher's logits of them are computed once and cached.
    with pipeline_project(tmp_path, params(teacher={"source": "teachers/mine.onnx"}, train={"augment": False})):
        assert cli(tmp_path, "run", "--json", str(tmp_path / "run.json")) == 0
        summary = json.loads((tmp_path / "run.json").read_text())
        splits = load_splits(tmp_path, "digits")
        teacher = summary["candidates"]["teacher_fp32"]
        for split in ("val", "test"):  # its accuracy through ORT, like every candidate's
            assert teacher[split]["accuracy"] == pytest.approx(
                runtime.accuracy(tmp_path / "teachers" / "mine.onnx", splits[split].x, splits[split].y)
            )
        assert teacher["size_bytes"] == (tmp_path / "teachers" / "mine.onnx").stat().st_size
        c = MlflowClient()
        runs = {r.data.tags["stage"]: r for r in c.search_runs([c.get_experiment_by_name("digits").experiment_id])}
        assert "teacher_member" not in runs  # nothing was trained as a teacher
        assert runs["teacher"].data.tags["source"] == "teachers/mine.onnx"
        assert runs["student_kd"].data.tags["cached"] == "False" and "kd_fp32" in summary["candidates"]
        logits_cache = list((tmp_path / ".edgekd" / "logits").glob("*.npy"))
        assert logits_cache  # the teacher's logits of the fixed inputs, cached by content
        # a feature method cannot use a file: refused before anything runs
        assert cli(tmp_path, "run", "--set", "distill.method=hint") == 1
        assert "'hint' needs one PyTorch teacher trained here" in capsys.readouterr().err
        assert file_sha256(tmp_path / "teachers" / "mine.onnx")  # the file is left as it was


def test_pseudo_label_learns_from_an_unlabelled_pool_added_with_the_dataset(
    tmp_path, capsys, cli, pipeline_project, params
):
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(d.target))
    labelled, pool = order[:1500], order[1500:]  # enough labelled rows for 20 per class in val and test
    with pipeline_project(tmp_path, params()):
        ext = tmp_path / "data" / "external"
        np.savez(ext / "labelled.npz", x=d.images[labelled], y=d.target[labelled], scale=np.float32(16))
        np.savez(ext / "pool.npz", x=d.images[pool], scale=np.float32(16))
        assert (
            cli(
                tmp_path,
                "data",
                "add",
                "mine",
                "--kind",
                "image",
                "--source",
                "labelled.npz",
                "--unlabelled",
                "pool.npz",
            )
            == 0
        )
        assert "297 unlabelled samples" in capsys.readouterr().out
        assert (
            cli(
                tmp_path,
                "run",
                "--dataset",
                "mine",
                "--set",
                "distill.method=pseudo_label",
                "--json",
                str(tmp_path / "run.json"),
            )
            == 0
        )
        summary = json.loads((tmp_path / "run.json").read_text())
        assert summary["kd_variant"].startswith("pseudo_label(")
        prepared = json.loads((tmp_path / "data" / "prepared" / "mine" / "summary.json").read_text())
        assert prepared["unlabelled"] > 250  # the pool reached the prepared data (duplicates of labelled ones dropped)
        kd_val = summary["candidates"]["kd_fp32"]["val"]["accuracy"]
        assert kd_val > 0.5 and summary["registered"] is not None

        # `data remove` takes the dataset out of params.yaml, dvc.lock, DVC and data/; its model predicts as before
        inputs = [str(tmp_path / f"{i}.png") for i in labelled[:3]]
        for i, f in zip(labelled, inputs):
            Image.fromarray(d.images[i].astype(np.uint8)).save(f)
        capsys.readouterr()
        assert cli(tmp_path, "predict", "mine", *inputs) == 0
        predicted = capsys.readouterr().out
        assert len(predicted.splitlines()) == 3
        status = _dvc_status(tmp_path)
        assert not [s for s in status if "mine" in s]  # its stages and .dvc files are up to date

        assert cli(tmp_path, "data", "remove", "mine", "--yes") == 0

        assert "mine" not in yaml.safe_load((tmp_path / "params.yaml").read_text())["datasets"]
        assert not [s for s in yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"] if "mine" in s]
        assert not any((tmp_path / "data" / k / "mine").exists() for k in ("raw", "prepared"))
        assert sorted(p.name for p in ext.iterdir()) == ["labelled.npz", "pool.npz"]  # kept, no longer DVC-tracked
        assert f"kept on disk: {ext / 'labelled.npz'}" in capsys.readouterr().out
        assert _dvc_status(tmp_path) == status  # every other stage as it was
        assert cli(tmp_path, "predict", "mine", *inputs) == 0
        assert capsys.readouterr().out == predicted


def _dvc_status(root: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"], cwd=root, capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout)
