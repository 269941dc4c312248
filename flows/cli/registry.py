"""`edgekd promote`, `rollback`, `history`, `predict`, `export` and `reproduce`: the registry's versions, their
`production` alias, what a registered model predicts, a version for a firmware build, and whether its record
rebuilds it."""

from __future__ import annotations

from flows.cli.common import DATASET_HELP, config, error, write_json
from flows.cli.exits import Exit


def add_parsers(sub) -> None:
    pr = sub.add_parser("promote", help="move the 'production' alias to a version, after the gate passes again")
    pr.add_argument("version", help="registered model version")
    pr.add_argument("--model", help="registered model name (default: the dataset's name)")
    pr.add_argument("--dataset", help=DATASET_HELP + "; its gate policy is checked")
    pr.set_defaults(fn=cmd_promote)
    rb = sub.add_parser("rollback", help="give 'production' back to the version that held it before")
    rb.add_argument("--model", help="registered model name (default: the dataset's name)")
    rb.add_argument("--dataset", help=DATASET_HELP)
    rb.set_defaults(fn=cmd_rollback)
    hi = sub.add_parser("history", help="which version held 'production' when, who moved it, refused attempts")
    hi.add_argument("--model", help="registered model name (default: the dataset's name)")
    hi.add_argument("--dataset", help=DATASET_HELP)
    hi.set_defaults(fn=cmd_history)
    pd_ = sub.add_parser("predict", help="predict raw inputs with a registered model (its runtime + its spec only)")
    pd_.add_argument("model", help="registered model name (the dataset's name)")
    pd_.add_argument("inputs", nargs="+", help="image or wav files, text lines, or CSV rows of features")
    pd_.add_argument("--ref", default="staging", help="a version number or an alias (default: staging)")
    pd_.set_defaults(fn=cmd_predict)
    ex = sub.add_parser(
        "export",
        help="write a registered version for a firmware build: `--format tflm` gives the model as a C array, its "
        "operators, its arena and its input quantization (the sha256 is checked first)",
    )
    ex.add_argument("ref", metavar="NAME@VERSION", help="registered model and version number or alias, e.g. fsdd@3")
    ex.add_argument("dir", help="a new or empty folder to write into")
    ex.add_argument("--format", choices=["tflm"], default="tflm", help="what to write (default: tflm)")
    ex.set_defaults(fn=cmd_export)
    rp = sub.add_parser(
        "reproduce",
        help="rebuild a registered version from its record (commit, config, data hash) in a temporary worktree and "
        "compare; registers and moves nothing",
    )
    rp.add_argument("ref", metavar="NAME@VERSION", help="registered model and version number or alias, e.g. digits@1")
    rp.add_argument("--json", metavar="PATH", help="also write the comparison here")
    rp.set_defaults(fn=cmd_reproduce)


def _name(args) -> str:
    return args.model or config(args).data.name


def cmd_promote(args) -> int:
    from components.gate import decide
    from flows.tracking.errors import PromotionError
    from flows.tracking.promotion import promote

    policy = config(args).gate

    def gate_check(candidate, teacher, production, plain):
        if (
            candidate is None
            or teacher is None
            or not candidate.has("accuracy")
            or candidate.p95_ms is None
            or candidate.size_bytes is None
            or not teacher.has("accuracy")
        ):
            raise PromotionError(
                "the version carries no measured metrics; only versions registered by the pipeline can be promoted"
            )
        return decide(candidate, teacher, production, policy, plain=plain)

    return _move(args, "production", lambda: promote(_name(args), str(args.version), gate_check))


def cmd_rollback(args) -> int:
    from flows.tracking.promotion import rollback

    return _move(args, "production rolled back", lambda: rollback(_name(args)))


def _move(args, what: str, move) -> int:
    """Carry out a move of `production` and say who moved it from which version to which, or why it was refused."""
    from flows.tracking.errors import PromotionError

    try:
        m = move()
    except PromotionError as e:
        error(f"refused: {e}")
        return Exit.REFUSED
    print(f"{_name(args)}: {what} {m.from_ or '(none)'} -> {m.to} by {m.who} at {m.when}")
    return Exit.OK


def cmd_history(args) -> int:
    from mlflow.exceptions import MlflowException

    from flows.tracking.errors import unreachable
    from flows.tracking.promotion import history
    from flows.tracking.tracker import client

    name = _name(args)
    try:
        entries = history(name)
        aliases = client().get_registered_model(name).aliases
    except MlflowException as e:
        if unreachable(e):
            raise  # main() says so
        error(f"error: {e.message}")
        return Exit.ERROR
    print(f"{name}: who moved 'production', oldest first")
    if not entries:
        print("  (never promoted)")
    for h in entries:
        move = f"{h.from_ or '(none)'} -> {h.to}"
        outcome = f"REFUSED: {h.refused.splitlines()[0]}" if h.refused is not None else "done"
        print(f"  {h.when}  {h.action:<8}  {move:<12}  by {h.who:<12}  {outcome}")
    print("now: " + (", ".join(f"{a} = version {v}" for a, v in sorted(aliases.items())) or "no aliases"))
    return Exit.OK


def cmd_predict(args) -> int:
    # No training code: the registry client, the model file, its preprocessing spec and its runtime (ONNX Runtime,
    # ExecuTorch for a .pte, LiteRT for a .tflite).
    from components.predict import predict, read_input
    from flows.tracking.errors import IntegrityError, PromotionError
    from flows.tracking.registry import fetch_verified

    try:
        with fetch_verified(args.model, args.ref) as (path, spec, _):
            raw = [read_input(spec, a) for a in args.inputs]
            outs = predict(path, spec, raw)
    except (PromotionError, IntegrityError, OSError, ValueError) as e:
        error(f"refused: {e}")
        return Exit.REFUSED
    for arg, out in zip(args.inputs, outs):
        print(f"{out.label}\t{out.probability:.4f}\t{arg}")
    return Exit.OK


def cmd_export(args) -> int:
    from components.formats import tflm
    from flows.tracking.errors import IntegrityError, PromotionError
    from flows.tracking.registry import fetch_verified, parse_ref

    try:
        name, ref = parse_ref(args.ref)
        with fetch_verified(name, ref) as (path, spec, mv):
            if path.suffix != ".tflite":
                raise ValueError(
                    f"{name} version {mv.version} is {path.name}: only a full-integer LiteRT version runs under "
                    "TFLite Micro (register one with export.formats listing tflite)"
                )
            record = {"model": name, "version": str(mv.version), "sha256": mv.tags.get("sha256")}
            out = tflm.write_firmware(path, args.dir, spec, record)
    except (PromotionError, IntegrityError, OSError, ValueError, tflm.TflmError) as e:
        error(f"refused: {e}")
        return Exit.REFUSED
    print(f"{name} version {mv.version} for TFLite Micro in {out.folder}: {', '.join(out.files)}")
    print(f"  arena {out.arena_bytes} bytes ({out.arena_bytes / 1024:.1f} KiB), flash {out.flash_bytes} bytes")
    print(f"  operators: {', '.join(out.ops)}")
    q = out.input
    print(f"  input {q.dtype} {q.shape}: real = {q.scale:.6g} * (q - {q.zero_point})")
    return Exit.OK


def cmd_reproduce(args) -> int:
    from pathlib import Path

    from flows.pipelines.reproduce import ReproduceError, reproduce
    from flows.tracking.errors import PromotionError

    try:
        out = reproduce(Path(args.project_dir).resolve(), args.ref, log=lambda line: print(line, flush=True))
    except ValueError as e:
        error(f"error: {e}")
        return Exit.ERROR
    except PromotionError as e:
        error(f"refused: {e}")
        return Exit.REFUSED
    except ReproduceError as e:
        error(f"not reproduced: {e}")
        return Exit.NOT_REPRODUCED
    print(f"{out.name} version {out.version} ({out.candidate}, commit {out.commit[:12]}): {out.verdict}")
    if out.verdict == "identical artifact":
        print(f"  sha256 {out.recorded_sha256} rebuilt bit for bit")
    for line in out.details:
        print(f"  {line}")
    if not out.identical:
        print(f"  recorded sha256 {out.recorded_sha256}, rebuilt {out.rebuilt_sha256 or '(no such candidate)'}")
        if out.rebuilt_candidate != out.candidate:
            print(f"  the rebuild selected {out.rebuilt_candidate or 'nothing'}")
        print(f"  first stage whose val metrics differ: {out.first_differing_stage or 'none (measuring or selection)'}")
    for k, d in sorted(out.metric_deltas.items()):
        print(f"  {k}: {d:+.4f} against the record")
    if args.json:
        write_json(args.json, out.as_json())
        print(f"comparison written to {args.json}")
    return Exit.OK if out.identical else Exit.NOT_REPRODUCED
