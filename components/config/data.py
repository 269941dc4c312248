"""A dataset's configuration (`datasets.NAME` of params.yaml): where it is, which kind reads it with which
typed options, how it is labelled, split and validated."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SerializeAsAny, ValidationInfo, field_validator

from components.config.base import Section
from components.data.options import KindOptions, options_model

# The dataset of a params file that defines none: scikit-learn's handwritten digits, which need no download.
DIGITS = {"kind": "image", "root": "data/external", "source": "sklearn:digits", "classes": [str(i) for i in range(10)]}


class ValidationConfig(Section):
    min_rows_per_class: int = Field(20, ge=1, description="Each class needs at least this many rows in each split.")
    max_class_imbalance: float = Field(3.0, ge=1, description="Largest class count / smallest class count, per split.")


class DataConfig(Section):
    """One dataset (`datasets.NAME`): where it is, which kind reads it, how it is labelled and split."""

    name: str = Field(
        description="Dataset name (its key under `datasets`): the MLflow experiment and registered model's name."
    )
    kind: Literal["image", "audio", "text", "tabular"] = Field(
        description="Data kind: which reader, checks, preprocessing and architectures it gets."
    )
    root: str = Field(
        description="Data root, relative to the project; `source` must stay inside it. DVC watches it "
        "as the input of the ingest stage (dvc.yaml reads it from params.yaml, so it is "
        "always written out), e.g. data/external."
    )
    source: str = Field(
        description="A built-in ('sklearn:digits', 'sklearn:breast_cancer') or a path relative to `root`."
    )
    unlabelled: str | None = Field(
        None,
        description="An unlabelled pool of the same kind (a path relative to `root`) "
        "for methods that use one, e.g. distill.method pseudo_label.",
    )
    classes: list[str] = Field(
        min_length=2, description="The label set as the source spells labels; its order fixes class indices."
    )
    options: SerializeAsAny[KindOptions] = Field(
        default_factory=dict,
        validate_default=True,
        description="The kind's reading, checking and preprocessing options (see the "
        "options of each kind below); an unknown one is an error.",
    )
    seed: int = Field(42, description="Seed of the split.")
    val_fraction: float = Field(0.15, gt=0, lt=0.5, description="Fraction of samples in the validation split.")
    test_fraction: float = Field(0.2, gt=0, lt=0.5, description="Fraction of samples in the test split.")
    validation: ValidationConfig = Field(
        ValidationConfig(), description="Thresholds of the Great Expectations suites over the prepared splits (below)."
    )
    intended_use: str = Field(
        "",
        description="What the model is for and not for, for the model card (default: a "
        "sentence from the kind and classes).",
    )

    @field_validator("options", mode="before")
    @classmethod
    def _kind_options(cls, value, info: ValidationInfo):
        """Options are typed by the kind: validated against its model, so an unknown key names itself."""
        if "kind" not in info.data:
            return KindOptions()  # no kind to check them against: the error names the kind
        model = options_model(info.data["kind"])
        return value if isinstance(value, model) else model.model_validate(value or {})

    @property
    def num_classes(self) -> int:
        return len(self.classes)
