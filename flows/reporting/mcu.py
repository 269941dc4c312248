"""The run's full-integer LiteRT candidates under TensorFlow Lite Micro, beside their LiteRT and ONNX Runtime
twins, with the microcontroller budgets each fits: the table the terminal, the model card and the note show."""

from __future__ import annotations

from dataclasses import dataclass

from components.candidate import Measurement
from components.config import PipelineConfig


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


@dataclass(frozen=True)
class McuRow:
    """A full-integer LiteRT candidate under TensorFlow Lite Micro beside its twins: the same file in the LiteRT
    interpreter, and the same student quantized to static INT8 by ONNX Runtime (`twin`, None where not built)."""

    candidate: str
    val_litert: float
    test_litert: float
    val_tflm: float | None  # None: TFLM lacks an operator
    test_tflm: float | None
    twin: str | None
    val_twin: float | None
    test_twin: float | None
    arena_kb: float | None
    flash_kb: float
    missing_ops: list[str]
    input_dtype: str  # int8: full-integer
    fits: dict[str, bool]  # by MCU budget of benchmark.targets

    @property
    def tflm_minus_twin(self) -> float | None:
        """TFLM's test metric minus the ONNX Runtime twin's, in points."""
        if self.test_tflm is None or self.test_twin is None:
            return None
        return (self.test_tflm - self.test_twin) * 100


def mcu_rows(results: dict[str, Measurement], cfg: PipelineConfig, m: str) -> list[McuRow]:
    """Every candidate TensorFlow Lite Micro ran, with its twins and the MCU budgets it fits."""
    rows = []
    for name, r in results.items():
        if r.mcu is None:
            continue
        twin = name.replace("_tflite_int8", "_int8_static")
        t = results.get(twin)
        fit = r.mcu.fit
        rows.append(
            McuRow(
                candidate=name,
                val_litert=r.val.get(m),
                test_litert=r.test.get(m),
                val_tflm=r.mcu.val.get(m) if r.mcu.val else None,
                test_tflm=r.mcu.test.get(m) if r.mcu.test else None,
                twin=twin if t else None,
                val_twin=t.val.get(m) if t else None,
                test_twin=t.test.get(m) if t else None,
                arena_kb=fit.arena_bytes / 1024 if fit.runs else None,
                flash_kb=fit.flash_bytes / 1024,
                missing_ops=fit.missing_ops,
                input_dtype=fit.input_dtype,
                fits={n: r.mcu.fits(b.ram_kb, b.flash_kb) for n, b in cfg.benchmark.mcus().items()},
            )
        )
    return rows


def mcu_lines(rows: list[McuRow], cfg: PipelineConfig, m: str) -> list[str]:
    """The TensorFlow Lite Micro table as Markdown (terminal and model card), [] when TFLM ran nothing."""
    if not rows:
        return []
    budgets = cfg.benchmark.mcus()
    head = [
        "candidate",
        "input",
        f"val {m} LiteRT / TFLM / ORT twin",
        f"test {m} LiteRT / TFLM / ORT twin",
        "TFLM − twin, test points",
        "arena KiB",
        "flash KiB",
        *[f"fits {n} ({b.ram_kb:g} KiB RAM, {b.flash_kb:g} KiB flash)" for n, b in budgets.items()],
    ]

    def f(v):
        return "—" if v is None else f"{v:.4f}"

    out = [_row(head), _row(["---"] * len(head))]
    for r in rows:
        gap = r.tflm_minus_twin
        out.append(
            _row(
                [
                    r.candidate,
                    r.input_dtype,
                    f"{f(r.val_litert)} / {f(r.val_tflm)} / {f(r.val_twin)}",
                    f"{f(r.test_litert)} / {f(r.test_tflm)} / {f(r.test_twin)}",
                    "—" if gap is None else f"{gap:+.2f}",
                    f"{r.arena_kb:.1f}" if r.arena_kb is not None else "TFLM lacks " + ", ".join(r.missing_ops),
                    f"{r.flash_kb:.1f}",
                    *["yes" if r.fits[n] else "no" for n in budgets],
                ]
            )
        )
    out += [
        "",
        "TFLM: TensorFlow Lite Micro's reference interpreter on this host, one sample at a time, in the smallest "
        "arena the model allocates in (found by bisection to 16 bytes; a 32-bit board is expected to need no more). "
        "Flash: the model's bytes, which its C array holds. The ORT twin is the same student quantized to static "
        "INT8 by ONNX Runtime on the same calibration samples. Latency on a microcontroller: not measured.",
    ]
    return out
