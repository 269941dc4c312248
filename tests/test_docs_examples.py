"""The data page's `params.yaml` example of each kind is valid configuration, and each kind's loader reads data
written in that example's format with those options."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from scipy.io import wavfile

from components.config import load_config
from components.data import get_kind

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]


def readme_examples() -> dict:
    text = (REPO / "docs" / "data.md").read_text()
    block = text[text.index("### One example per kind") :]
    start = block.index("```yaml") + len("```yaml")
    return yaml.safe_load(block[start : block.index("```", start)])["datasets"]


def write(name: str, folder: Path) -> None:
    rng = np.random.default_rng(0)
    if name == "flowers":
        for c in ("daisy", "rose", "tulip"):
            (folder / "flowers" / c).mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / "flowers" / c / f"{i}.png")
    elif name == "commands":
        for c in ("no", "yes"):
            (folder / "commands" / c).mkdir(parents=True)
            for i in range(3):
                wave = (0.1 * rng.standard_normal(8000)).astype(np.float32)
                wavfile.write(folder / "commands" / c / f"{i}.wav", 16000, wave)
    elif name == "tickets":
        (folder / "tickets.csv").write_text('body,is_spam\n"Hi, see you at 5",0\n"WIN cash, call now",1\n')
    else:
        pd.DataFrame({"radius": [14.1, 20.6], "texture": [20.3, 29.3], "diagnosis": [0, 1]}).to_parquet(
            folder / "patients.parquet"
        )


def test_each_kind_example_loads_its_format(tmp_path):
    examples = readme_examples()
    assert {e["kind"] for e in examples.values()} == {"image", "audio", "text", "tabular"}
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"] |= examples
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for name in examples:
        cfg = load_config(tmp_path / "params.yaml", name)
        write(name, tmp_path)
        raw = get_kind(cfg.data.kind).load(str(tmp_path / cfg.data.source), cfg.data.options)
        assert sorted(set(raw.labels.tolist())) == sorted(cfg.data.classes), name
