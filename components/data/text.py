"""Text kind: one message per line of a delimited file (e.g. the SMS Spam Collection, `label<TAB>text`). Options
(reading, the raw checks, and the tokenization fitted on the train split only and stored in the preprocessing
spec): components.data.options.TextOptions.

The message column is the only free text: when a line holds more fields than there are columns (the message
contains the delimiter), the extra fields are joined back into the message.
"""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from components.data.base import DataError, Expectation, RawData, infer_label_column, unlabelled
from components.data.options import TextOptions

PAD_ID, UNK_ID = 0, 1  # ids of the fitted vocabulary start at 2
TOKEN_DROPOUT = 0.1  # share of a training message's tokens replaced by the unknown id (see `augment`)


def token_dropout(x, gen, p: float = TOKEN_DROPOUT):
    """Training augmentation: replace each real token by the unknown id with probability `p`, so the model learns
    to classify messages with words it has never seen (what every test message has)."""
    import torch

    drop = (torch.rand(x.shape, generator=gen) < p) & (x != PAD_ID)
    return torch.where(drop, torch.full_like(x, UNK_ID), x)


class TextKind:
    name = "text"
    Options = TextOptions

    @property
    def augment(self):
        return token_dropout

    # --- reading -----------------------------------------------------------------------------------------------

    def load(self, source: str, options: TextOptions) -> RawData:
        o = options
        path = Path(source)
        if not path.is_file():
            raise DataError(f"text source {source}: no such file")
        delim = o.delimiter
        label_map = o.label_map
        texts, labels, lines, bad = [], [], [], []
        columns = label_pos = text_pos = None
        lines_read, blank = self._lines(path)
        for number, line, error in lines_read:
            fields = self._fields(line, delim, o.quotechar)
            if columns is None:
                columns, label_pos, text_pos = self._columns(fields if o.header else None, o, path)
                if o.header:
                    continue
            label, text = self._pick(fields, columns, label_pos, text_pos, delim, path, number)
            label = label.strip()
            texts.append(text)
            labels.append(label_map.get(label, label))
            lines.append(number)
            bad.append(error)
        if not texts:
            raise DataError(f"{path}: no messages found")
        meta, info = self._meta(path, lines, bad, blank, o)
        return RawData(texts, np.array(labels, dtype=str), meta, info)

    def load_unlabelled(self, source: str, options: TextOptions, like: RawData | None = None) -> RawData:
        """Option `unlabelled_format` 'lines' (default): one message per line, the whole line (no label, no
        delimiter; `header` and `quotechar` do not apply); 'delimited': the labelled file's own format (delimiter,
        header, quotechar, label and text columns), whose labels are read and dropped. Blank lines are skipped and
        lines that are not UTF-8 kept and flagged, as in `load`."""
        o = options
        path = Path(source)
        if not path.is_file():
            raise DataError(f"unlabelled text pool {source}: no such file")
        if o.unlabelled_format == "delimited":
            raw = self.load(source, o)
            return unlabelled(raw.samples, raw.meta, raw.info, path)
        texts, lines, bad = [], [], []
        lines_read, blank = self._lines(path)
        for number, line, error in lines_read:
            texts.append(line)
            lines.append(number)
            bad.append(error)
        if not texts:
            raise DataError(f"{path}: no messages found")
        meta, info = self._meta(path, lines, bad, blank, o)
        return unlabelled(texts, meta, info, path)

    def infer_options(self, source: str, options: TextOptions, classes: list[str] | None
                      ) -> tuple[TextOptions, str]:
        """With neither `label_column` nor `text_column` given: for a .csv file, delimiter ',' and quotechar '"'
        unless given; the label column (`infer_label_column`, over the lines with the most common number of fields
        after line 1); the message column, the longest of the others on average; and, unless `header` is given,
        whether line 1 is a header (its label field is none of the labels below it)."""
        given = options.given()
        if "label_column" in given or "text_column" in given:
            return options, ""
        path = Path(source)
        if not path.is_file():
            raise DataError(f"text source {source}: no such file")
        found = {k: v for k, v in (("delimiter", ","), ("quotechar", '"'))
                 if path.suffix.lower() == ".csv" and k not in given}
        o = TextOptions.model_validate(given | found)
        label_map = o.label_map
        rows = [self._fields(line, o.delimiter, o.quotechar) for _, line, _ in self._lines(path)[0]]
        width = Counter(map(len, rows)).most_common(1)[0][0] if rows else 0
        if width < 2:
            raise DataError(f"{path}: lines of {width} field(s) separated by {o.delimiter!r}; expected a label "
                            "and a message (set --option delimiter=...)")
        body = [r for r in rows[1:] if len(r) == width]
        labels = {i: [label_map.get(r[i].strip(), r[i].strip()) for r in body] for i in range(width)}
        label, note = infer_label_column(labels, classes, path)
        text = max((i for i in range(width) if i != label), key=lambda i: sum(len(r[i]) for r in body))
        first = rows[0][label].strip() if len(rows[0]) == width else None
        header = given.get("header", first is not None and label_map.get(first, first) not in labels[label])
        found |= {"label_column": label, "text_column": text, "header": header}
        said = [f"{k} {v!r}" for k, v in found.items() if k in ("delimiter", "quotechar")]
        said += ["line 1 is a header"] * (header and "header" not in given)
        return TextOptions.model_validate(given | found), ", ".join([note, f"text column {text}", *said])

    @staticmethod
    def _lines(path: Path) -> tuple[list[tuple[int, str, bool]], int]:
        """(line number, text, whether it was not valid UTF-8) of each non-blank line, and the blank lines skipped.
        Undecodable bytes are replaced rather than raised: the raw GX suite then names every such line at once."""
        out, blank = [], 0
        pieces = path.read_bytes().split(b"\n")
        if pieces[-1] == b"":  # what follows the final newline is not a line
            pieces.pop()
        for number, line_bytes in enumerate(pieces, start=1):
            line_bytes = line_bytes.removesuffix(b"\r")
            if number == 1:
                line_bytes = line_bytes.removeprefix(b"\xef\xbb\xbf")  # UTF-8 byte-order mark
            if not line_bytes.strip():
                blank += 1
                continue
            try:
                out.append((number, line_bytes.decode("utf-8"), False))
            except UnicodeDecodeError:
                out.append((number, line_bytes.decode("utf-8", errors="replace"), True))
        return out, blank

    @staticmethod
    def _meta(path: Path, lines: list[int], bad: list[bool], blank: int, o: TextOptions
              ) -> tuple[dict[str, np.ndarray], dict]:
        info = {"source": path.name, "lines": len(lines), "blank_lines_skipped": blank,
                "encoding_errors": int(sum(bad)), "max_chars": o.max_chars}
        return {"line": np.array(lines, dtype=np.int64), "encoding_error": np.array(bad, dtype=np.int8)}, info

    @staticmethod
    def _fields(line: str, delim: str, quotechar: str | None) -> list[str]:
        if quotechar:
            return next(csv.reader([line], delimiter=delim, quotechar=quotechar))
        return line.split(delim)

    @staticmethod
    def _columns(header: list[str] | None, o: TextOptions, path: Path) -> tuple[int, int, int]:
        """Number of columns and the positions of the label and the message."""
        def position(role: str) -> int:
            col = getattr(o, f"{role}_column")
            if isinstance(col, str) and header is None and not col.isdigit():
                raise DataError(f"{path}: {role} column {col!r} is a name, but options.header is false "
                                "(give a 0-based position, or set header: true)")
            if header is not None and isinstance(col, str):
                names = [h.strip() for h in header]
                if col not in names:
                    raise DataError(f"{path}: {role} column {col!r} not found in the header {names}")
                return names.index(col)
            pos = int(col)
            if pos < 0:
                raise DataError(f"options.{role}_column must be a 0-based position >= 0, got {pos}")
            if header is not None and pos >= len(header):
                raise DataError(f"{path}: {role} column {pos} is beyond the {len(header)} columns of the header")
            return pos

        label_pos, text_pos = position("label"), position("text")
        if label_pos == text_pos:
            raise DataError(f"{path}: label and text are both column {label_pos}")
        columns = len(header) if header is not None else max(label_pos, text_pos) + 1
        return columns, label_pos, text_pos

    @staticmethod
    def _pick(fields, columns, label_pos, text_pos, delim, path, number) -> tuple[str, str]:
        if len(fields) < columns:
            missing = [f"{role} column {pos}" for role, pos in (("label", label_pos), ("text", text_pos))
                       if pos >= len(fields)]
            why = " and ".join(missing) + " missing" if missing else "fewer than the header"
            raise DataError(f"{path}, line {number}: {len(fields)} field(s) separated by {delim!r}, expected "
                            f"{columns} ({why})")
        extra = len(fields) - columns
        # The message absorbs surplus fields: columns before it count from the left, those after from the right.
        text = delim.join(fields[text_pos:text_pos + extra + 1])
        label = fields[label_pos if label_pos < text_pos else label_pos + extra]
        return label, text

    # --- on-disk form: UTF-8 bytes of all messages plus offsets (no object arrays) ------------------------------

    def pack(self, samples) -> dict[str, np.ndarray]:
        encoded = [s.encode("utf-8", "surrogatepass") for s in samples]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(b) for b in encoded])
        return {"utf8": np.frombuffer(b"".join(encoded), dtype=np.uint8), "offsets": offsets}

    def unpack(self, arrays: dict[str, np.ndarray]):
        data, off = arrays["utf8"].tobytes(), arrays["offsets"]
        return [data[off[i]:off[i + 1]].decode("utf-8", "surrogatepass") for i in range(len(off) - 1)]

    # --- checks ------------------------------------------------------------------------------------------------

    def describe(self, raw: RawData, options: TextOptions) -> pd.DataFrame:
        n = len(raw)
        enc = raw.meta.get("encoding_error", np.zeros(n, dtype=np.int8))
        return pd.DataFrame({
            "chars": np.array([len(t) for t in raw.samples], dtype=np.int64),
            "blank": np.array([int(not t.strip()) for t in raw.samples], dtype=np.int64),
            "encoding_error": np.asarray(enc, dtype=np.int64),
            "label": raw.labels,
        })

    def expectations(self, raw: RawData, options: TextOptions) -> list[Expectation]:
        o = options
        return [
            ("ExpectColumnValuesToBeInSet", {"column": "blank", "value_set": [0]}),  # empty or whitespace-only
            ("ExpectColumnValuesToBeBetween", {"column": "chars", "min_value": 1, "max_value": o.max_chars}),
            ("ExpectColumnValuesToBeInSet", {"column": "encoding_error", "value_set": [0]}),
        ]

    # --- preprocessing fitted on train -------------------------------------------------------------------------

    def fit(self, train: RawData, options: TextOptions) -> dict:
        from components.preprocess import text_tokens

        o = options
        spec = {"kind": "text", "tokenizer": o.tokenizer, "lowercase": bool(o.lowercase),
                "digits_to_zero": bool(o.digits_to_zero), "token_pattern": o.token_pattern,
                "max_len": o.max_len, "pad_id": PAD_ID, "unk_id": UNK_ID, "input_shape": [o.max_len],
                "input_dtype": "int64"}
        if o.tokenizer == "hash":
            size = o.num_buckets + 2
            spec["num_buckets"] = o.num_buckets
        else:
            counts = Counter(t for text in train.samples
                             for t in text_tokens(text, o.token_pattern, o.lowercase, o.digits_to_zero))
            words = sorted((w for w, c in counts.items() if c >= o.min_count), key=lambda w: (-counts[w], w))
            spec["vocab"] = words[:o.max_vocab]
            size = len(spec["vocab"]) + 2
        return spec | {"vocab_size": size, "value_range": [0, size - 1]}

    def dedupe_keys(self, samples, options: TextOptions) -> list[str]:
        """Messages with the same tokens are the same input to the model ("Call 0800 123" and "call 0800 456" with
        digits_to_zero): dropping them before the split keeps near-duplicates out of two splits."""
        from components.preprocess import text_tokens

        o = options
        return ["\x1f".join(text_tokens(str(t), o.token_pattern, o.lowercase, o.digits_to_zero))
                for t in samples]
