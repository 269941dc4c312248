"""What the commands share: the `--dataset`, `--set` and `--json` arguments, the effective config, and how the
pipeline's errors become messages and exit codes."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

from flows.cli.exits import Exit

DATASET_HELP = "a key of `datasets` in params.yaml (default: its `dataset`)"
SET_HELP = (
    "override a stage key for this run, SECTION.KEY=VALUE (repeatable), e.g. distill.dkd.beta=4; logged "
    "with the effective config"
)


def add_dataset(p, help: str = DATASET_HELP) -> None:
    p.add_argument("--dataset", help=help)


def add_set(p, help: str = SET_HELP) -> None:
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help=help)


def overrides(args) -> dict:
    """`--set SECTION.KEY=VALUE` pairs as {"SECTION.KEY": value}, values parsed as YAML (4 -> int, true -> bool)."""
    import yaml

    from components.config import ConfigError

    out = {}
    for kv in getattr(args, "set", None) or []:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {kv!r}: expected SECTION.KEY=VALUE, e.g. student.epochs=100")
        out[key.strip()] = yaml.safe_load(value)
    return out


def config(args):
    from components.config import load_config

    return load_config(Path(args.project_dir) / "params.yaml", getattr(args, "dataset", None), overrides(args))


def checked_config(args):
    """The effective config with its KD methods resolved, its teacher file found and its formats' tools installed: a
    bad params file, override, distill.* setting, teacher.source or export.formats fails here, before any server
    starts."""
    from components.config import ConfigError
    from components.formats.runtime import check_makeable
    from components.kd import resolve

    cfg = config(args)
    resolve(cfg.distill, cfg.teacher)
    try:
        check_makeable(cfg.export.formats)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.teacher.source:
        from flows.phases.train import teacher_path

        teacher_path(Path(args.project_dir), cfg.teacher.source)
    return cfg


def write_json(path: str, obj: dict) -> None:
    from components.data.base import write_text

    write_text(Path(path), json.dumps(obj, indent=2, default=float) + "\n")


def error(message: str) -> None:
    print(message, file=sys.stderr)


class Failed(Exception):
    """A command stopped with `code` after saying why."""

    def __init__(self, code: int):
        self.code = code


@contextmanager
def pipeline_errors(nothing: str):
    """Turn what a pipeline raises on bad input into its message and exit code (raising Failed): a bad config, KD
    option or teacher file (1), data that fails validation or cannot be read (3), a repository another process
    holds (5). `nothing` says what did not happen, e.g. "nothing was trained or registered"."""
    from components.config import ConfigError
    from components.kd import KDConfigError
    from components.search import SearchConfigError
    from components.teachers import TeacherFileError
    from components.validation import DataValidationError
    from flows.data.dvc import DvcError
    from flows.infra.device.client import DeviceFailed

    try:
        yield
    except (ConfigError, KDConfigError, TeacherFileError, SearchConfigError) as e:
        error(f"error: {e}")
        raise Failed(Exit.ERROR) from None
    except DeviceFailed as e:
        error(
            f"error: {e}; nothing was registered. What was trained is cached: the same command measures again once "
            "the target answers."
        )
        raise Failed(Exit.DEVICE) from None
    except DataValidationError as e:
        error(f"error: data validation failed; {nothing}, data/ is unchanged.\n{e}")
        raise Failed(Exit.BAD_DATA) from None
    except TimeoutError as e:  # after the task's bounded retries: another process holds a lock
        error(f"error: {e}; {nothing}, try again when it has finished")
        raise Failed(Exit.BUSY) from None
    except DvcError as e:
        if e.data_error is None:  # DVC itself failed, not the data: its traceback says more than a message
            raise
        error(f"error: the data could not be ingested; {nothing}, data/ is unchanged.\n{e.data_error}")
        raise Failed(Exit.BAD_DATA) from None
