"""TensorFlow Lite Micro: whether a full-integer `.tflite` file runs on a microcontroller, and what it needs there.

TFLM's reference interpreter (the `tflite-micro` package, the same kernels a Cortex-M build falls back to without
CMSIS-NN) runs the file on this host. A file's fit is found, not estimated:
- the smallest tensor arena it runs in: arenas are tried by bisection down to 16 bytes, each in a child process
  allocating the whole model (TFLM plans every tensor and the kernels' scratch buffers at allocation, so a file that
  allocates in an arena runs in it);
- its flash: the model's bytes, which the C array of the firmware hand-off holds (aligned to 16 bytes);
- its operators, those TFLM lacks named.
The host build has 64-bit pointers, so its arena holds TFLM's bookkeeping at twice a 32-bit board's pointer size:
a board is expected to need no more for the same file (not measured on a board).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from components.formats.base import captured_native_output
from components.formats.litert import TensorSpec

ALIGN = 16  # bytes: the arena search's step and the C array's alignment
MAX_ARENA = 64 << 20


class TflmError(RuntimeError):
    """TFLM cannot run the file: it lacks an operator (`missing`, by TFLite's names), or the file does not allocate
    in any arena tried."""

    def __init__(self, message: str):
        super().__init__(message)
        self.missing = sorted(set(re.findall(r"op for builtin opcode '([A-Z0-9_]+)'", message)))


class McuFit(BaseModel):
    """What a `.tflite` file needs under TFLite Micro: the smallest arena it runs in (bytes), its flash (the model's
    bytes), the C source of its array (bytes of text), its operators and those TFLM lacks (then arena is 0)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arena_bytes: int
    flash_bytes: int
    c_source_bytes: int
    ops: list[str]
    missing_ops: list[str] = []
    input_dtype: str  # int8 for a full-integer file (int32 token ids for text); float32 where it stayed float

    @property
    def runs(self) -> bool:
        return not self.missing_ops


def _model(path: str | Path):
    from tflite_micro import runtime

    return runtime.convert_bytearray_to_object(bytearray(Path(path).read_bytes()))


def input_dtype(path: str | Path) -> str:
    """The dtype of a `.tflite` file's first input, by numpy's name (int8, float32, ...)."""
    from tflite_micro import runtime

    model = _model(path)
    graph = model.subgraphs[0]
    code = graph.tensors[graph.inputs[0]].type
    names = {v: k for k, v in vars(runtime.schema_fb.TensorType).items() if not k.startswith("_")}
    return names[code].lower()


def ops(path: str | Path) -> list[str]:
    """The builtin operators a `.tflite` file uses, by TFLite's names (CONV_2D, ...), sorted."""
    from tflite_micro import runtime

    model = _model(path)
    names = {v: k for k, v in vars(runtime.schema_fb.BuiltinOperator).items() if not k.startswith("_")}
    used = {
        runtime.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
        for g in model.subgraphs
        for op in g.operators or []
    }
    return sorted(names.get(c, str(c)) for c in used)


def resolver_calls(op_names: list[str]) -> list[str]:
    """The `MicroMutableOpResolver` calls that register `op_names`: CONV_2D -> AddConv2D, FULLY_CONNECTED ->
    AddFullyConnected."""
    return [
        "Add" + "".join(w.capitalize() if not w[0].isdigit() else w.upper() for w in n.split("_")) + "()"
        for n in op_names
    ]


def interpreter(path: str | Path, arena: int):
    """TFLM's interpreter of the file in an arena of `arena` bytes; TflmError (with TFLM's own words) where it
    does not allocate."""
    from tflite_micro import runtime

    with captured_native_output() as text:
        try:
            return runtime.Interpreter.from_file(str(path), arena_size=int(arena))
        except RuntimeError as e:
            raise TflmError(
                f"{Path(path).name}: TFLM could not allocate it in {arena} bytes: {text()[-1500:] or e}"
            ) from e


_PROBE = (
    "import sys; from tflite_micro import runtime; "
    "runtime.Interpreter.from_file(sys.argv[1], arena_size=int(sys.argv[2]))"
)


def _allocates(path: str | Path, arena: int) -> bool:
    """Whether TFLM allocates the file in `arena` bytes, tried in a child process: TFLM's Python interpreter crashes
    the process (a segmentation fault) on some arenas too small for its own structures, instead of failing. A child
    that lacks an operator raises TflmError naming it."""
    import subprocess
    import sys

    child = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), str(arena)], capture_output=True, text=True, timeout=300
    )
    if child.returncode != 0 and (missing := TflmError(child.stdout + child.stderr)).missing:
        raise missing
    return child.returncode == 0


def smallest_arena(path: str | Path) -> int:
    """The smallest arena (a multiple of 16 bytes) in which TFLM allocates the file, found by bisection, each
    arena tried in a child process of its own."""
    hi = max(ALIGN, Path(path).stat().st_size // ALIGN * ALIGN)
    while not _allocates(path, hi):
        if hi >= MAX_ARENA:
            raise TflmError(f"{Path(path).name}: TFLM does not allocate it in {MAX_ARENA} bytes")
        hi *= 2
    lo = 0  # fails (or is nothing)
    while hi - lo > ALIGN:
        mid = (lo + hi) // 2 // ALIGN * ALIGN
        if _allocates(path, mid):
            hi = mid
        else:
            lo = mid
    return hi


def fit(path: str | Path) -> McuFit:
    """The file's fit under TFLM: arena, flash, C source size and operators (those TFLM lacks named, arena 0)."""
    size = {
        "flash_bytes": Path(path).stat().st_size,
        "c_source_bytes": len(c_source(Path(path).read_bytes(), "g_model")),
    }
    known = {"ops": ops(path), "input_dtype": input_dtype(path)}
    try:
        arena = smallest_arena(path)
    except TflmError as e:
        if not e.missing:
            raise
        return McuFit(arena_bytes=0, missing_ops=e.missing, **size, **known)
    return McuFit(arena_bytes=arena, **size, **known)


def predict(path: str | Path, x: np.ndarray, arena: int) -> np.ndarray:
    """Logits over `x` computed by TFLM's interpreter in an arena of `arena` bytes, one sample at a time (as a
    board runs it), the input quantized and the output dequantized as the file's tensors state."""
    m = interpreter(path, arena)
    i, o = TensorSpec.of(m.get_input_details(0)), TensorSpec.of(m.get_output_details(0))
    out = []
    for row in x:
        m.set_input(i.to_tensor(row[None]), 0)
        m.invoke()
        out.append(o.to_float(m.get_output(0)))
    return np.concatenate(out)


def input_spec(path: str | Path, arena: int) -> TensorSpec:
    """The input tensor as TFLM sees it: dtype, shape, scale and zero point (what firmware feeds the model)."""
    return TensorSpec.of(interpreter(path, arena).get_input_details(0))


def c_source(data: bytes, name: str, header: str = "model_data.h") -> str:
    """The model as a C array definition, aligned for TFLM (`.cc`), including `header`."""
    rows = [", ".join(f"0x{b:02x}" for b in data[i : i + 12]) for i in range(0, len(data), 12)]
    body = ",\n  ".join(rows)
    return (
        f'#include "{header}"\n\n'
        f"alignas({ALIGN}) const unsigned char {name}[] = {{\n  {body}\n}};\n"
        f"const unsigned int {name}_len = {len(data)};\n"
    )


def c_header(name: str, arena: int) -> str:
    guard = name.upper() + "_H_"
    return (
        f"#ifndef {guard}\n#define {guard}\n\n"
        f"extern const unsigned char {name}[];\n"
        f"extern const unsigned int {name}_len;\n"
        f"// The smallest tensor arena TFLM allocated this model in (checked by edgekd on the host).\n"
        f"constexpr unsigned int {name}_arena_size = {arena};\n\n#endif  // {guard}\n"
    )


def ops_header(calls: list[str]) -> str:
    """A header that registers exactly the model's operators with a `MicroMutableOpResolver` of their number."""
    return (
        "#ifndef MODEL_OPS_H_\n#define MODEL_OPS_H_\n\n"
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n\n'
        f"using ModelOpResolver = tflite::MicroMutableOpResolver<{len(calls)}>;\n\n"
        "// Registers exactly the operators the model uses.\n"
        "inline TfLiteStatus RegisterModelOps(ModelOpResolver& resolver) {\n"
        + "".join(f"  TF_LITE_ENSURE_STATUS(resolver.{c});\n" for c in calls)
        + "  return kTfLiteOk;\n}\n\n#endif  // MODEL_OPS_H_\n"
    )


def c_array_bytes(source: str) -> bytes:
    """The bytes a C source made by c_source holds (what a test compares with the `.tflite` file)."""
    body = source[source.index("{") + 1 : source.index("};")]
    return bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", body))


class Firmware(BaseModel):
    """What `edgekd export --format tflm` wrote: the folder, its files, and what firmware must be built with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    folder: str
    files: list[str]
    arena_bytes: int
    flash_bytes: int
    ops: list[str]
    input: TensorSpec


def write_firmware(path: str | Path, dst: str | Path, preprocess: dict, record: dict) -> Firmware:
    """The firmware hand-off of a full-integer `.tflite` file, written into `dst` (a new or empty folder) at once:
    the model as a C array (`model_data.h`, `model_data.cc`), its operators as `MicroMutableOpResolver` calls
    (`model_ops.h`), and `model.json` with the arena it was checked in, its flash, the input's quantization (scale,
    zero point), the preprocessing spec and `record` (name, version, sha256); besides, the `.tflite` file itself."""
    import json
    import os
    import shutil
    import tempfile

    path, dst = Path(path), Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"{dst}: exists and is not an empty folder; name a new one")
    fit_ = fit(path)
    if not fit_.runs:
        raise TflmError(f"{path.name}: TFLM lacks {', '.join(fit_.missing_ops)}; it cannot run on a microcontroller")
    inp = input_spec(path, fit_.arena_bytes)
    if np.issubdtype(np.dtype(inp.dtype), np.floating):
        raise TflmError(f"{path.name} takes {inp.dtype} input: only a full-integer (INT8) file is exported for TFLM")
    data = path.read_bytes()
    calls = resolver_calls(fit_.ops)
    meta = {
        **record,
        "arena_bytes": fit_.arena_bytes,
        "arena_checked_on": "the TFLM reference interpreter on a 64-bit host (a 32-bit board is expected to need "
        "no more; not measured on one)",
        "flash_bytes": fit_.flash_bytes,
        "ops": fit_.ops,
        "resolver": calls,
        "input": inp.model_dump(),
        "preprocess": preprocess,
    }
    files = {
        "model_data.cc": c_source(data, "g_model"),
        "model_data.h": c_header("g_model", fit_.arena_bytes),
        "model_ops.h": ops_header(calls),
        "model.json": json.dumps(meta, indent=2) + "\n",
    }
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text)
        shutil.copyfile(path, tmp / "model.tflite")
        if dst.exists():
            dst.rmdir()  # empty, checked above
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Firmware(
        folder=str(dst),
        files=sorted([*files, "model.tflite"]),
        arena_bytes=fit_.arena_bytes,
        flash_bytes=fit_.flash_bytes,
        ops=fit_.ops,
        input=inp,
    )
