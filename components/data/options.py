"""The reading, checking and preprocessing options of each data kind (`datasets.NAME.options`), typed: an unknown
option or a bad value is an error naming it, never silently ignored.

Kept apart from the kinds themselves so that the configuration can check options without importing a reader
(pandas, scipy, PIL).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# The Free Spoken Digit Dataset's naming: {digit}_{speaker}_{index}.wav
FSDD_PATTERN = r"^(?P<label>\d+)_(?P<speaker>[a-z]+)_(?P<index>\d+)\.wav$"


class KindOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def given(self) -> dict:
        """Only the options set explicitly (what `data add` writes into params.yaml)."""
        return self.model_dump(include=self.model_fields_set)


class ImageOptions(KindOptions):
    mode: Literal["L", "RGB"] = Field("L", description="Colour mode images are read in: 'L' grayscale or 'RGB' "
                                                       "(folders of image files only).")
    train_per_class: int | None = Field(None, ge=1, description="Folders of image files only: read at most this "
                                        "many images of each class outside val/ and test/, the first in file-name "
                                        "order (a documented subset for a CPU, e.g. CIFAR-10's 5,000 a class).")


class TestRule(BaseModel):
    """Files whose meta column `field` (a named group of `pattern`) takes one of `values` form the test split."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    __test__ = False  # not a pytest class

    field: str = Field(description="A meta column: a named group of `pattern`.")
    values: list[int | str] = Field(description="The values of `field` whose files are test.")


class AudioOptions(KindOptions):
    label_from: Literal["filename", "folder"] = Field(
        "filename", description="Where a file's label is: its name (through `pattern`) or its class sub-folder.")
    pattern: str = Field(FSDD_PATTERN, description="Regex over the file name with a named group `label`; other named "
                                                   "groups become meta columns (default: FSDD's naming).")
    test_rule: TestRule | None = Field(None, description="{field, values}: the files that form the test split "
                                                         "(absent: a stratified random split).")
    sample_rate: int | None = Field(None, ge=1, description="Expected sample rate in Hz (default: the most common).")
    min_seconds: float = Field(0.05, ge=0, description="Raw check: shortest clip accepted.")
    max_seconds: float = Field(10.0, gt=0, description="Raw check: longest clip accepted.")
    max_clipped_fraction: float = Field(0.01, ge=0, le=1, description="Raw check: largest share of samples at full "
                                                                      "scale.")
    min_rms: float = Field(0.001, ge=0, description="Raw check: quietest clip accepted (RMS).")
    seconds: float = Field(1.0, gt=0, description="Preprocessing: every clip centre-padded or cropped to this length.")
    n_fft: int = Field(256, ge=8, description="Preprocessing: FFT window of the log-mel spectrogram (samples).")
    hop: int = Field(128, ge=1, description="Preprocessing: hop between windows (samples).")
    n_mels: int = Field(40, ge=1, description="Preprocessing: mel bands, the model input's height.")
    fmin: float = Field(0.0, ge=0, description="Preprocessing: lowest mel frequency (Hz).")
    fmax: float | None = Field(None, gt=0, description="Preprocessing: highest mel frequency (Hz; default: half the "
                                                       "sample rate).")
    center: bool = Field(True, description="Preprocessing: frames centred on multiples of `hop` (false: starting "
                                           "at them, MLPerf Tiny's KWS framing: 49 frames of 40 ms every 20 ms in 1 s).")
    features: Literal["log_mel", "mfcc"] = Field("log_mel", description="Preprocessing: the model input's rows, "
                                                 "log-mel bands or MFCCs (MLPerf Tiny's KWS input: 10 of them).")
    n_mfcc: int = Field(10, ge=1, description="Preprocessing: cepstral coefficients kept with `features: mfcc`.")


class TabularOptions(KindOptions):
    label_column: str = Field("label", description="Name of the label column (`data add` infers it when the file "
                                                   "has no column named 'label').")
    feature_columns: list[str] | None = Field(None, description="The feature columns in model-input order "
                                                                "(default: every column but the label).")
    label_map: dict[str, str] = Field({}, description="{value in the file: label}, for numeric labels such as 0/1 "
                                                      "(keys match 1, 1.0 and '1' alike).")
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV field separator.")
    range_margin: float = Field(0.5, ge=0, description="How far past the train split's min/max a prepared value may "
                                                       "lie, as a fraction of that feature's train range.")

    @field_validator("label_map", mode="before")
    @classmethod
    def _keys_as_text(cls, v):
        return {str(k): str(x) for k, x in (v or {}).items()}


class TextOptions(KindOptions):
    delimiter: str = Field("\t", min_length=1, max_length=1, description="Field separator.")
    header: bool = Field(False, description="Whether line 1 names the columns.")
    label_column: int | str = Field(0, description="Name (with a header) or 0-based position of the label "
                                                   "(`data add` infers it).")
    text_column: int | str = Field(1, description="Name (with a header) or 0-based position of the message "
                                                  "(`data add` infers it).")
    quotechar: str | None = Field(None, description="Parse each line as CSV with this quote character (default: a "
                                                    "plain split).")
    label_map: dict[str, str] = Field({}, description="Source label -> class name, e.g. {'1': 'spam', '0': 'ham'} "
                                                      "(unmapped labels stay as spelled).")
    max_chars: int = Field(1000, ge=1, description="Raw check: the longest message accepted.")
    unlabelled_format: Literal["lines", "delimited"] = Field(
        "lines", description="The unlabelled pool's format: one message per line, or the labelled file's format "
                             "with its label column ignored.")
    tokenizer: Literal["vocab", "hash"] = Field("vocab", description="'vocab': a word list fitted on train; 'hash': "
                                                                     "crc32 buckets, nothing to fit.")
    lowercase: bool = Field(True, description="Lowercase before tokenizing.")
    digits_to_zero: bool = Field(False, description="Write every digit as 0 first, so that e.g. all 11-digit phone "
                                                    "numbers share one token.")
    token_pattern: str = Field(r"\w+|[^\w\s]", description="The regex of a token (default: words and single "
                                                          "symbols).")
    min_count: int = Field(2, ge=1, description="Occurrences a train word needs to get an id.")
    max_vocab: int = Field(4000, ge=1, description="At most this many words, most frequent first.")
    num_buckets: int = Field(4096, ge=1, description="Hash buckets (tokenizer 'hash').")
    max_len: int = Field(64, ge=1, description="Token ids per message, truncated or padded.")

    @field_validator("label_map", mode="before")
    @classmethod
    def _keys_as_text(cls, v):
        return {str(k): str(x) for k, x in (v or {}).items()}


OPTIONS: dict[str, type[KindOptions]] = {"image": ImageOptions, "audio": AudioOptions, "tabular": TabularOptions,
                                         "text": TextOptions}


def options_model(kind: str) -> type[KindOptions]:
    try:
        return OPTIONS[kind]
    except KeyError:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {sorted(OPTIONS)}") from None


def parse(kind: str, values: dict | KindOptions | None, where: str = "options") -> KindOptions:
    """`values` as the options of `kind`; ValueError naming `where.KEY` for an unknown option or a bad value."""
    model = options_model(kind)
    if isinstance(values, model):
        return values
    try:
        return model.model_validate(values or {})
    except ValidationError as e:
        lines = [f"{where}.{'.'.join(map(str, err['loc']))}: {_message(err, model)}" for err in e.errors()]
        raise ValueError(f"invalid {kind} options:\n  " + "\n  ".join(lines)) from None


def _message(err: dict, model: type[KindOptions]) -> str:
    if err["type"] == "extra_forbidden":
        return f"not an option of this kind; expected one of {sorted(model.model_fields)}"
    return err["msg"]
