"""The datasets under DVC: where their raw and prepared files are (layout.py), the DVC stages that write them
(stages.py, run by `dvc repro`), running DVC (dvc.py), a shared remote (remote.py), and adding or removing a
dataset (add.py, remove.py). Nothing here imports Prefect or MLflow."""
