"""`edgekd promote`, `rollback`, `history`, `predict` and `reproduce`: the registry's versions, their `production`
alias, what a registered model predicts, and whether its record rebuilds it."""

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
    # No training code: the registry client, the model file, its preprocessing spec and its runtime (ONNX Runtime, or
    # ExecuTorch for a .pte).
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
