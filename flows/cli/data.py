"""`edgekd data add`, `data remove` and `data remote`: datasets under DVC, and the remote a team shares them on."""

from __future__ import annotations

import sys
from pathlib import Path

from flows.cli.common import error, overrides
from flows.cli.exits import Exit


def add_parsers(sub) -> None:
    data = sub.add_parser("data", help="manage datasets").add_subparsers(dest="data_command", required=True)
    da = data.add_parser("add", help="put a dataset under DVC and add it to params.yaml")
    da.add_argument("name", help="dataset name (also the registered model's name)")
    da.add_argument("--kind", required=True, help="data kind: image, audio, text or tabular")
    da.add_argument("--source", required=True, help="file or folder, relative to --root")
    da.add_argument("--root", default="data/external", help="data root, relative to the project")
    da.add_argument("--classes", help="comma-separated label set in index order (default: the labels found)")
    da.add_argument("--option", action="append", help="kind option KEY=VALUE (repeatable)")
    da.add_argument(
        "--unlabelled",
        metavar="PATH",
        help="an unlabelled pool of the same kind, relative to --root "
        "(for distill methods that use one, e.g. pseudo_label)",
    )
    da.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="a stage key recorded in the dataset's overrides (repeatable), e.g. gate.min_accuracy=0.9 "
        "on top of the relative gate a new dataset gets",
    )
    da.set_defaults(fn=cmd_data_add)
    p = data.add_parser(
        "remote",
        help="share the datasets: make an S3 (or S3-compatible) bucket the project's "
        "default DVC remote and push the data tracked so far",
    )
    p.add_argument("url", help="s3://BUCKET/PREFIX, or any DVC remote URL (a path, gs://, azure://, ssh://, ...)")
    p.add_argument("--name", default="team", help="the remote's name in .dvc/config (default: team)")
    p.add_argument(
        "--endpoint-url",
        help="an S3-compatible server's endpoint (MinIO, Ceph, ...), e.g. "
        "http://127.0.0.1:9000; credentials come from AWS_ACCESS_KEY_ID / "
        "AWS_SECRET_ACCESS_KEY, never from .dvc/config",
    )
    p.set_defaults(fn=cmd_data_remote)
    dr = data.add_parser(
        "remove",
        help="take a dataset out of params.yaml, dvc.lock and data/ (its registered "
        "model stays; its source file stays on disk)",
    )
    dr.add_argument("name", help="a key of `datasets` in params.yaml, not the default `dataset`")
    dr.add_argument("--yes", action="store_true", help="remove without asking (needed without a terminal)")
    dr.set_defaults(fn=cmd_data_remove)


def _options(pairs: list[str] | None) -> dict:
    """`--option KEY=VALUE` pairs, values parsed as YAML (numbers, booleans, lists and mappings)."""
    import yaml

    options = {}
    for kv in pairs or []:
        key, sep, value = kv.partition("=")
        if not sep:
            raise ValueError(f"--option {kv!r}: expected KEY=VALUE")
        options[key] = yaml.safe_load(value)
    return options


def cmd_data_add(args) -> int:
    from components.config import ConfigError
    from components.data import DataError
    from flows.data.add import add_dataset

    try:
        options = _options(args.option)
    except ValueError as e:
        error(f"error: {e}")
        return Exit.ERROR
    try:
        added = add_dataset(
            Path(args.project_dir),
            args.name,
            args.kind,
            args.source,
            args.root,
            args.classes.split(",") if args.classes else None,
            options,
            args.unlabelled,
            overrides(args),
        )
    except (ConfigError, DataError, ValueError) as e:
        error(f"error: {e}\nnothing was added.")
        return Exit.BAD_DATA
    if added.inferred:
        print(f"{added.inferred} (recorded in datasets.{args.name}.options; --option overrides it)")
    if added.splits_from_source:
        print(f"splits kept as the source has them: {', '.join(added.splits_from_source)}")
    gate = ", ".join(f"{k} {v}" for k, v in added.section["overrides"]["gate"].items())
    print(
        f"gate of {args.name!r}: {gate} (datasets.{args.name}.overrides.gate; tighten it there or with "
        f"edgekd run --set gate.KEY=VALUE)"
    )
    pool = f", {added.unlabelled_samples} unlabelled samples" if added.unlabelled_samples is not None else ""
    print(
        f"added dataset {args.name!r}: {added.samples} samples, classes {added.section['classes']}{pool}; "
        f"run it with: edgekd run --dataset {args.name}"
    )
    if added.push:
        print(added.push, file=sys.stdout if added.pushed else sys.stderr)
    return Exit.OK


def cmd_data_remove(args) -> int:
    from components.config import ConfigError
    from flows.data.remove import plan_removal, remove_dataset

    try:
        plan = plan_removal(Path(args.project_dir), args.name)
    except ConfigError as e:
        error(f"refused: {e}; nothing was removed")
        return Exit.REFUSED
    print(f"to remove: {plan.describe()}")
    if not args.yes:
        if not sys.stdin.isatty():
            error("refused: no terminal to confirm on; pass --yes to remove without asking; nothing was removed")
            return Exit.REFUSED
        if input(f"remove dataset {args.name!r}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing was removed")
            return Exit.REFUSED
    try:
        remove_dataset(plan)
    except (OSError, RuntimeError) as e:
        error(
            f"error: {e}\n{args.name!r} is still in params.yaml; run `edgekd data remove {args.name}` again "
            f"once this is fixed, to finish"
        )
        return Exit.ERROR
    print(f"removed dataset {args.name!r}")
    for p in plan.kept:
        print(f"kept on disk: {p} (your data; delete it yourself if you no longer need it)")
    print(
        f"the registered model {args.name!r} and its history stay in MLflow: "
        f"`edgekd predict {args.name} INPUT...` still works"
    )
    return Exit.OK


def cmd_data_remote(args) -> int:
    from flows.data.remote import RemoteError, set_remote

    try:
        out = set_remote(Path(args.project_dir), args.url, args.name, args.endpoint_url)
    except (ValueError, RemoteError) as e:
        error(f"error: {e}")
        return Exit.ERROR
    endpoint = f" at {out.endpoint_url}" if out.endpoint_url else ""
    print(f"default DVC remote {out.name!r}: {out.url}{endpoint} (in .dvc/config: commit it to share it)")
    print(f"pushed the data tracked so far: {out.pushed}")
    return Exit.OK
