"""The exit codes of every `edgekd` command, in one table (docs/failures.md lists them)."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    ERROR = 1  # a bad command line, params.yaml, override, KD option or teacher file; a failure of the command
    NOTHING_PASSED = 2  # no candidate passed the gate: nothing was registered (argparse's usage errors too)
    BAD_DATA = 3  # the data failed validation or could not be read: nothing was trained, data/ unchanged
    REFUSED = 4  # the registry refused: a promotion the gate fails, a tampered artifact, an unknown version
    BUSY = 5  # another process holds DVC's lock or the SQLite store: try again
    UNREACHABLE = 6  # the MLflow tracking server stopped answering
    DEVICE = 7  # a device agent (a measurement target) refused or stopped answering
    NOT_REPRODUCED = 8  # `reproduce`: the rebuild differs from the registered version, or its record cannot hold


MEANING = {
    Exit.OK: "done",
    Exit.ERROR: "an error in the command line, params.yaml, an override, a KD option or a teacher file; or the "
    "command failed",
    Exit.NOTHING_PASSED: "no candidate passed the gate, so nothing was registered (also argparse's usage errors)",
    Exit.BAD_DATA: "the data failed validation or could not be read; nothing was trained, data/ is unchanged",
    Exit.REFUSED: "the registry refused: a promotion the gate fails, a tampered artifact, an unknown version or alias",
    Exit.BUSY: "another process holds DVC's lock, the SQLite store or the registry lock; try again",
    Exit.UNREACHABLE: "the MLflow tracking server stopped answering; run the command again when it is back",
    Exit.DEVICE: "a device agent (a measurement target) refused the request or stopped answering; nothing was "
    "registered, and the run resumes from cache once it answers",
    Exit.NOT_REPRODUCED: "`reproduce` rebuilt something other than the registered version (the report says what "
    "differs), or the version's record cannot hold (its commit, config or data hash)",
}
