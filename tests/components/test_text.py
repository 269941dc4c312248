import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from components.config import DataConfig, effective_config, load_config
from components.data import DataError, RawData, get_kind
from components.data.base import content_hashes, duplicate_hashes, load_raw, prepare_splits, save_raw
from components.data.options import parse
from components.data.text import token_dropout
from components.formats import onnx_rt
from components.formats.onnx_rt import export_onnx
from components.models import build
from components.preprocess import text_tokens, transform
from components.prune import prune_channels
from components.quantize import calibration_sample, quantize_dynamic_int8, quantize_static_int8
from components.train import fit
from tests.conftest import require

pytestmark = pytest.mark.unit

KIND = get_kind("text")
SMS = Path(__file__).parents[3] / "shared" / "datasets" / "sms_spam" / "SMSSpamCollection"
PARAMS = Path(__file__).parents[2] / "params.yaml"


def write(path: Path, lines: list[str | bytes], eol: bytes = b"\n") -> str:
    path.write_bytes(eol.join(s if isinstance(s, bytes) else s.encode("utf-8") for s in lines) + eol)
    return str(path)


# --- loading ---------------------------------------------------------------------------------------------------


def test_tab_file_label_first_with_line_numbers_and_non_ascii(tmp_path):
    src = write(tmp_path / "sms.tsv", ["ham\tSee you at 5", "spam\tWIN £100 now!", "", "ham\tCafé?"], eol=b"\r\n")

    raw = KIND.load(src, parse(KIND.name, {}))

    assert raw.samples == ["See you at 5", "WIN £100 now!", "Café?"]  # \r stripped, blank line 3 skipped
    assert raw.labels.tolist() == ["ham", "spam", "ham"]
    assert raw.meta["line"].tolist() == [1, 2, 4]
    assert raw.meta["encoding_error"].tolist() == [0, 0, 0]
    assert raw.info["blank_lines_skipped"] == 1  # line 3


def test_label_last_by_position_and_message_containing_the_delimiter(tmp_path):
    src = write(tmp_path / "sms.csv", ["hello there,0", "free entry, call now, txt WIN,1"])

    raw = KIND.load(
        src,
        parse(
            KIND.name, {"delimiter": ",", "text_column": 0, "label_column": 1, "label_map": {"1": "spam", "0": "ham"}}
        ),
    )

    assert raw.samples == ["hello there", "free entry, call now, txt WIN"]
    assert raw.labels.tolist() == ["ham", "spam"]


def test_header_with_column_names_numeric_labels_and_label_map(tmp_path):
    src = write(tmp_path / "sms.csv", ["id;message;is_spam", "7;ok see you;0", "8;claim your prize;1"])

    raw = KIND.load(
        src,
        parse(
            KIND.name,
            {
                "delimiter": ";",
                "header": True,
                "text_column": "message",
                "label_column": "is_spam",
                "label_map": {1: "spam", 0: "ham"},
            },
        ),
    )  # YAML may give int keys

    assert raw.samples == ["ok see you", "claim your prize"]
    assert raw.labels.tolist() == ["ham", "spam"]
    assert raw.meta["line"].tolist() == [2, 3]  # line 1 is the header


def test_quoted_csv(tmp_path):
    src = write(tmp_path / "sms.csv", ["label,text", 'spam,"Free, as in ""free"""', "ham,plain"])
    raw = KIND.load(
        src,
        parse(
            KIND.name,
            {"delimiter": ",", "header": True, "quotechar": '"', "label_column": "label", "text_column": "text"},
        ),
    )
    assert raw.samples == ['Free, as in "free"', "plain"]


def test_missing_label_column_names_the_column_and_the_file(tmp_path):
    src = write(tmp_path / "sms.csv", ["message,category", "hi,ham"])
    with pytest.raises(DataError, match=r"sms\.csv: label column 'label' not found in the header"):
        KIND.load(
            src, parse(KIND.name, {"delimiter": ",", "header": True, "label_column": "label", "text_column": "message"})
        )
    with pytest.raises(DataError, match=r"sms\.csv: label column 'category' is a name, but options.header is false"):
        KIND.load(src, parse(KIND.name, {"delimiter": ",", "label_column": "category"}))


# --- the reading options `data add` infers ---------------------------------------------------------------------

SENTENCES = [f"review {i}: the plot was {'good' if i % 2 else 'bad'} and long" for i in range(12)]


@pytest.mark.parametrize(
    "row,label,text",
    [
        (lambda i, s, y: [s, y], 1, 0),  # label last
        (lambda i, s, y: [y, s], 0, 1),  # label first
        (lambda i, s, y: [str(i), y, s], 1, 2),  # an id column, unique per line, is no label
    ],
)
def test_label_and_text_columns_are_inferred_in_any_order(tmp_path, row, label, text):
    src = write(tmp_path / "s.tsv", ["\t".join(row(i, s, str(i % 2))) for i, s in enumerate(SENTENCES)])

    options, note = KIND.infer_options(src, parse(KIND.name, {}), None)
    raw = KIND.load(src, options)

    assert options.given() == {"label_column": label, "text_column": text, "header": False}
    assert note == f"label column {label} inferred (2 distinct values), text column {text}"
    assert raw.samples == SENTENCES and raw.labels.tolist() == [str(i % 2) for i in range(12)]


def test_classes_pick_the_label_column_among_several_that_could_be(tmp_path):
    src = write(
        tmp_path / "s.tsv",
        [f"{('en', 'fr')[i % 3 == 0]}\t{('neg', 'pos')[i % 2]}\t{s}" for i, s in enumerate(SENTENCES)],
    )
    with pytest.raises(
        DataError,
        match=r"columns \[0, 1\] could each hold the labels; pick one with --option "
        "label_column=COLUMN",
    ):
        KIND.infer_options(src, parse(KIND.name, {}), None)

    options, note = KIND.infer_options(src, parse(KIND.name, {}), ["neg", "pos"])

    assert (options.label_column, options.text_column) == (1, 2)
    assert note == "label column 1 inferred (2 distinct values), text column 2"


def test_csv_with_a_header_quoting_and_the_label_last(tmp_path):
    rows = [f'"{s}, thanks",{i % 2}' for i, s in enumerate(SENTENCES)]
    src = write(tmp_path / "tickets.csv", ["body,is_spam", *rows])

    options, note = KIND.infer_options(src, parse(KIND.name, {}), None)
    raw = KIND.load(src, options)

    assert options.given() == {"delimiter": ",", "quotechar": '"', "label_column": 1, "text_column": 0, "header": True}
    assert note == (
        "label column 1 inferred (2 distinct values), text column 0, delimiter ',', quotechar '\"', line 1 is a header"
    )
    assert raw.samples[0] == f"{SENTENCES[0]}, thanks" and len(raw) == 12


def test_given_columns_are_kept_and_a_file_without_a_label_column_is_refused(tmp_path):
    src = write(tmp_path / "s.tsv", [f"{i}\t{s}" for i, s in enumerate(SENTENCES)])
    given = {"label_column": 0, "text_column": 1}

    options, note = KIND.infer_options(src, parse(KIND.name, given), None)
    assert (options.given(), note) == (given, "")
    with pytest.raises(
        DataError,
        match=r"no column can hold the labels \(column 0: it holds 11 distinct values in 11 "
        r"rows, too many .*; set --option label_column=COLUMN",
    ):
        KIND.infer_options(src, parse(KIND.name, {}), None)


def test_short_line_names_the_line(tmp_path):
    src = write(tmp_path / "sms.tsv", ["ham\tfine", "spam\tcall now", "ham no tab here"])
    with pytest.raises(
        DataError,
        match=r"sms\.tsv, line 3: 1 field\(s\) separated by '\\t', expected 2 "
        r"\(text column 1 missing\)",
    ):
        KIND.load(src, parse(KIND.name, {}))
    src = write(tmp_path / "sms.csv", ["label,text,extra", "ham,hi,x", "spam,win"])
    with pytest.raises(
        DataError,
        match=r"sms\.csv, line 3: 2 field\(s\) separated by ',', expected 3 "
        r"\(fewer than the header\)",
    ):
        KIND.load(
            src, parse(KIND.name, {"delimiter": ",", "header": True, "label_column": "label", "text_column": "text"})
        )


def test_invalid_utf8_line_is_kept_flagged_and_failed_by_the_raw_suite(tmp_path):
    from components.validation import raw_plan, validate

    src = write(tmp_path / "sms.tsv", ["ham\tfine", b"spam\tbad \xff byte", "ham\t  ", "ham\t" + "x" * 30])
    opts = {"max_chars": 20}
    raw = KIND.load(src, parse(KIND.name, opts))
    assert raw.meta["encoding_error"].tolist() == [0, 1, 0, 0]
    assert raw.samples[1] == "bad \ufffd byte" and raw.info["encoding_errors"] == 1
    cfg = effective_config(
        {
            "datasets": {
                "t": {"kind": "text", "root": ".", "source": "sms.tsv", "classes": ["ham", "spam"], "options": opts}
            }
        }
    )

    report = validate(raw_plan(KIND, raw, cfg))

    failed = {(f["expectation"], f["column"]): f for f in report.failures}
    assert not report.success and len(failed) == 3
    assert failed[("expect_column_values_to_be_in_set", "encoding_error")]["examples"] == ["line 2: 1"]
    assert failed[("expect_column_values_to_be_in_set", "blank")]["examples"] == ["line 3: 1"]
    assert failed[("expect_column_values_to_be_between", "chars")]["examples"] == ["line 4: 30"]


def test_unknown_option_and_empty_file(tmp_path):
    src = write(tmp_path / "sms.tsv", ["ham\thi"])
    with pytest.raises(ValueError, match=r"options\.max_length: not an option of this kind"):
        KIND.load(src, parse(KIND.name, {"max_length": 5}))
    (tmp_path / "empty.tsv").write_bytes(b"\n\n")
    with pytest.raises(DataError, match="empty.tsv: no messages found"):
        KIND.load(str(tmp_path / "empty.tsv"), parse(KIND.name, {}))


def test_unlabelled_lines_whole_line_is_the_message_blank_skipped_bad_utf8_flagged(tmp_path):
    src = write(
        tmp_path / "pool.txt", ["\ufeffWin a prize\tnow", "", b"caf\xe9 later", "   ", "ham\tnot a label"], eol=b"\r\n"
    )

    pool = KIND.load_unlabelled(src, parse(KIND.name, {"delimiter": "\t", "header": True}))

    assert pool.samples == ["Win a prize\tnow", "caf\ufffd later", "ham\tnot a label"]  # BOM and \r stripped
    assert pool.labels.tolist() == ["", "", ""]
    assert pool.meta["line"].tolist() == [1, 3, 5] and pool.meta["encoding_error"].tolist() == [0, 1, 0]
    assert pool.info["blank_lines_skipped"] == 2 and pool.info["encoding_errors"] == 1 and pool.info["unlabelled"]


def test_unlabelled_delimited_reads_the_labelled_format_and_drops_its_labels(tmp_path):
    src = write(tmp_path / "pool.csv", ["label,text", "?,hello there", ",call me, later"])

    pool = KIND.load_unlabelled(
        src,
        parse(
            KIND.name,
            {
                "delimiter": ",",
                "header": True,
                "label_column": "label",
                "text_column": "text",
                "unlabelled_format": "delimited",
            },
        ),
    )

    assert pool.samples == ["hello there", "call me, later"] and pool.labels.tolist() == ["", ""]
    assert pool.meta["line"].tolist() == [2, 3]


def test_bad_unlabelled_text_pools_are_named(tmp_path):
    short = write(tmp_path / "short.csv", ["label,text", "onlyone"])
    (tmp_path / "blank.txt").write_bytes(b"\n \n")
    with pytest.raises(DataError, match=r"short\.csv, line 2: 1 field\(s\) separated by ','"):
        KIND.load_unlabelled(
            short,
            parse(
                KIND.name,
                {
                    "delimiter": ",",
                    "header": True,
                    "label_column": "label",
                    "text_column": "text",
                    "unlabelled_format": "delimited",
                },
            ),
        )
    with pytest.raises(DataError, match=r"blank\.txt: no messages found"):
        KIND.load_unlabelled(str(tmp_path / "blank.txt"), parse(KIND.name, {}))
    with pytest.raises(DataError, match=r"unlabelled text pool .*absent\.txt: no such file"):
        KIND.load_unlabelled(str(tmp_path / "absent.txt"), parse(KIND.name, {}))
    with pytest.raises(ValueError, match="options.unlabelled_format: Input should be 'lines' or 'delimited'"):
        KIND.load_unlabelled(short, parse(KIND.name, {"unlabelled_format": "csv"}))


def test_unlabelled_pool_duplicates_are_the_split_s_token_duplicates(tmp_path):
    from components.data.base import prepare_unlabelled

    texts = [
        f"message number {w} here"
        for w in (
            "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon"
        ).split()
    ]
    raw = RawData(texts, np.array(["ham", "spam"] * 10), {}, {})
    options = {"min_count": 1}
    data_cfg = DataConfig(
        name="sms",
        root=".",
        source="sms.tsv",
        kind="text",
        classes=["ham", "spam"],
        options=options,
        val_fraction=0.25,
        test_fraction=0.25,
    )
    splits, spec, _ = prepare_splits(KIND, raw, data_cfg)
    test_text = texts[
        int(
            np.flatnonzero(
                np.isin(duplicate_hashes(KIND, texts, parse(KIND.name, options)), splits["test"].meta["hash"])
            )[0]
        )
    ]
    src = write(
        tmp_path / "pool.txt", [test_text.upper(), "Message number ALPHA here!!", "something new", "SOMETHING new"]
    )
    pool = KIND.load_unlabelled(src, parse(KIND.name, options))

    x, hashes, dropped = prepare_unlabelled(KIND, pool, spec, splits, parse(KIND.name, options))

    # the upper-cased test message has the test message's tokens; "!!" makes the second one new;
    # "SOMETHING new" repeats "something new" once lower-cased
    assert dropped == 2 and len(x) == 2 and x.dtype == np.int64 and x.shape == (2, 64)
    assert hashes.tolist() == duplicate_hashes(
        KIND, ["Message number ALPHA here!!", "something new"], parse(KIND.name, options)
    )


def test_raw_round_trip_keeps_non_ascii_exactly(tmp_path):
    raw = RawData(
        ["naïve £5 😀", "", "tab\tinside"],
        np.array(["ham", "ham", "spam"]),
        {"line": np.array([1, 2, 3]), "encoding_error": np.zeros(3, np.int8)},
        {"lines": 3},
    )

    def save(path, arrays):
        np.savez(path, **arrays)

    save_raw(KIND, raw, tmp_path, save)
    back = load_raw(KIND, tmp_path)

    assert back.samples == raw.samples and back.labels.tolist() == ["ham", "ham", "spam"]
    assert back.meta["line"].tolist() == [1, 2, 3] and back.info == {"lines": 3}
    with np.load(tmp_path / "raw.npz", allow_pickle=False) as f:  # plain arrays, no pickled objects
        # UTF-8 bytes: "naïve £5 😀" = 8 ASCII + ï 2 + £ 2 + 😀 4 = 15; "" 0; "tab\tinside" 10
        assert f["s_utf8"].dtype == np.uint8 and f["s_offsets"].tolist() == [0, 15, 15, 25]


# --- tokenization ----------------------------------------------------------------------------------------------


def test_vocabulary_is_fitted_on_train_only():
    train = RawData(["win cash now", "Win a prize", "see you now"], np.array(["spam", "spam", "ham"]))
    spec = KIND.fit(train, parse(KIND.name, {"min_count": 2, "max_len": 5}))
    # counts: now 2, win 2 (case folded); every other word once -> below min_count
    assert spec["vocab"] == ["now", "win"] and spec["vocab_size"] == 4 and spec["value_range"] == [0, 3]
    assert spec["input_shape"] == [5] and spec["input_dtype"] == "int64"

    x = transform(json.loads(json.dumps(spec)), ["WIN now zebra", "now now now now now now now"])

    assert x.dtype == np.int64
    # win -> 3, now -> 2, zebra (a test-only word) -> unknown 1, then padding 0; long messages are truncated
    assert x.tolist() == [[3, 2, 1, 0, 0], [2, 2, 2, 2, 2]]


def test_vocabulary_ties_break_alphabetically_and_max_vocab_cuts_the_rarest():
    train = RawData(["b a c a b d"], np.array(["ham"]))
    spec = KIND.fit(train, parse(KIND.name, {"min_count": 1, "max_vocab": 3}))
    assert spec["vocab"] == ["a", "b", "c"]  # a 2, b 2, then c and d once each: c wins the tie alphabetically


def test_tokens_digits_and_hashing():
    pattern = r"\w+|[^\w\s]"
    assert text_tokens("Call 0800-123 NOW!", pattern) == ["call", "0800", "-", "123", "now", "!"]
    assert text_tokens("Call 0800-123", pattern, digits_to_zero=True) == ["call", "0000", "-", "000"]
    spec = KIND.fit(
        RawData(["x"], np.array(["ham"])), parse(KIND.name, {"tokenizer": "hash", "num_buckets": 16, "max_len": 2})
    )
    assert "vocab" not in spec and spec["vocab_size"] == 18
    # crc32(b"hello") = 0x3610A686 = 907060870; 907060870 mod 16 = 6 -> id 2 + 6
    assert transform(spec, ["hello"]).tolist() == [[8, 0]]


def test_exact_duplicates_never_straddle_splits():
    texts = [f"message number {i}" for i in range(60)]
    raw = RawData(texts + texts[:20], np.array((["ham", "spam"] * 30) + (["ham", "spam"] * 10)))

    splits, spec, dropped = prepare_splits(
        KIND,
        raw,
        DataConfig(
            name="sms",
            root=".",
            source="sms.tsv",
            kind="text",
            classes=["ham", "spam"],
            options={"min_count": 1, "max_len": 4},
        ),
    )

    assert dropped == 20 and sum(len(s) for s in splits.values()) == 60
    train = set(splits["train"].meta["hash"])
    assert not train & set(splits["val"].meta["hash"]) and not train & set(splits["test"].meta["hash"])
    assert splits["train"].x.dtype == np.int64 and splits["train"].x.shape[1] == 4


def test_near_duplicates_with_the_same_tokens_are_dropped_before_the_split():
    texts = [f"offer {w} today" for w in "abcdefghijklmnopqrst"] * 2
    texts[20:] = [t.upper().replace("TODAY", "today  ") for t in texts[:20]]  # case and spacing differ
    texts += ["Call 0800 123", "call 0900 456"]  # digits_to_zero: the same tokens
    raw = RawData(texts, np.array(["ham", "spam"] * 21))

    splits, _, dropped = prepare_splits(
        KIND,
        raw,
        DataConfig(
            name="sms",
            root=".",
            source="sms.tsv",
            kind="text",
            classes=["ham", "spam"],
            options={"digits_to_zero": True, "max_len": 4},
        ),
    )

    assert dropped == 21 and sum(len(s) for s in splits.values()) == 21
    seen = [h for s in splits.values() for h in s.meta["hash"]]
    assert len(seen) == len(set(seen))


def test_token_dropout_only_touches_real_tokens():
    x = torch.tensor([[5, 6, 7, 8, 0, 0]] * 2000)
    out = token_dropout(x, torch.Generator().manual_seed(0), p=0.25)
    assert (out[:, 4:] == 0).all()  # padding stays padding
    changed = out[:, :4] != x[:, :4]
    assert (out[:, :4][changed] == 1).all()  # a dropped token becomes the unknown id
    assert abs(changed.float().mean().item() - 0.25) < 0.02


# --- the real SMS Spam Collection -------------------------------------------------------------------------------


def test_real_sms_spam_counts():
    require(SMS.is_file(), f"SMS Spam Collection not available at {SMS} (../shared/datasets is absent)")
    cfg = load_config(PARAMS, "sms_spam")
    raw = KIND.load(str(SMS), cfg.data.options)
    labels, counts = np.unique(raw.labels, return_counts=True)
    assert dict(zip(labels.tolist(), counts.tolist())) == {"ham": 4824, "spam": 725}
    assert raw.meta["line"].tolist() == list(range(1, 5550))
    assert raw.info["encoding_errors"] == 0 and raw.info["blank_lines_skipped"] == 0
    assert sum(any(ord(c) > 127 for c in t) for t in raw.samples) > 0  # non-ASCII text survived decoding
    assert len(set(content_hashes(raw.samples))) == 5549 - 396  # exact duplicates
    # prepare also drops the 33 messages whose tokens repeat another's (case, spacing, digits)
    assert len(set(duplicate_hashes(KIND, raw.samples, cfg.data.options))) == 5549 - 396 - 33
    assert cfg.data.classes[-1] == "spam" and cfg.gate.metric == "f1_positive"


# --- models: pruning, ONNX export, ORT and INT8 on int64 token ids ---------------------------------------------

SPEC = {
    "kind": "text",
    "vocab_size": 40,
    "pad_id": 0,
    "unk_id": 1,
    "max_len": 12,
    "input_shape": [12],
    "input_dtype": "int64",
}


def toy_ids(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Messages of random words 5..39; a message is spam (1) iff it holds word 2 or word 3."""
    rng = np.random.default_rng(seed)
    x = rng.integers(5, 40, size=(n, 12))
    x[:, 9:] = 0  # padding
    y = rng.integers(0, 2, size=n)
    x[y == 1, rng.integers(0, 9, size=(y == 1).sum())] = rng.choice([2, 3], size=(y == 1).sum())
    return x.astype(np.int64), y.astype(np.int64)


@pytest.fixture(scope="module")
def toy_student():
    from components.data.base import Dataset

    (xt, yt), (xv, yv) = toy_ids(600, 0), toy_ids(200, 1)
    model = build("text", "student", SPEC, 2, 8, seed=0)
    model, _ = fit(
        model,
        Dataset(xt, yt),
        Dataset(xv, yv),
        epochs=15,
        lr=0.01,
        batch_size=64,
        patience=15,
        seed=0,
        device=torch.device("cpu"),
    )
    return model


def test_pruning_shrinks_embedding_and_convs_and_keeps_the_classes():
    model = build("text", "teacher", SPEC, 2, 8, seed=0)  # embedding 16, convs 32, head 64
    x = torch.from_numpy(toy_ids(5, 2)[0])

    pruned, report = prune_channels(model, x[:2], 0.25)

    assert pruned.body[0].weight.shape == (40, 12)  # 16 -> 12 embedding dims, every token kept
    assert report.channels_before[:2] == [32, 32] and report.channels_after[:2] == [24, 24]
    assert pruned.head[1].in_features == 48  # max + mean of 24 channels
    assert pruned(x).shape == (5, 2) and report.params_after < report.params_before


def test_student_exports_and_quantizes_on_int64_ids(toy_student, tmp_path):
    x, y = toy_ids(300, 3)
    pruned, _ = prune_channels(toy_student, torch.from_numpy(x[:2]), 0.25)
    path = tmp_path / "pruned.onnx"
    export_onnx(pruned, x, path)
    ref = pruned(torch.from_numpy(x[:33])).detach().numpy()
    np.testing.assert_allclose(onnx_rt.predict(path, x[:33]), ref, atol=1e-4)  # dynamic batch axis, int64 input
    acc32 = (onnx_rt.predict(path, x).argmax(1) == y).mean()
    assert acc32 > 0.9  # the INT8 comparison only means something for a model that learned

    static = quantize_static_int8(path, tmp_path / "s.onnx", calibration_sample(toy_ids(200, 4)[0], 64, 0))
    dynamic = quantize_dynamic_int8(path, tmp_path / "d.onnx")

    for info in (static, dynamic):
        tables = [i for i in onnx.load(info.path).graph.initializer if list(i.dims) == [40, 6]]
        assert [onnx.TensorProto.DataType.Name(t.data_type) for t in tables] == ["UINT8"]  # the embedding is 8-bit
        assert abs((onnx_rt.predict(info.path, x).argmax(1) == y).mean() - acc32) <= 0.02
