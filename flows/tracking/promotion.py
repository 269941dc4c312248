"""Moving `production`: promote (after the gate passes again on what the version recorded), roll back to the
previous holder, and the history of every move and refused attempt, kept on the registered model and on the
versions it touched."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from mlflow import MlflowClient
from pydantic import BaseModel, ConfigDict, Field

from components.gate import Decision, GateView
from flows.tracking.errors import IntegrityError, PromotionError
from flows.tracking.locks import registry_lock
from flows.tracking.registry import COMPLETE, PRODUCTION, actor, gate_view, verify_artifact, version_by_alias
from flows.tracking.tracker import client

HISTORY_TAG = "edgekd.production_history"
ARCHIVED = "archived"  # tag of a version that `production` moved away from

# (candidate, teacher, production or None, plain or None) of validation metrics -> the gate's decision
GateCheck = Callable[[GateView | None, GateView | None, GateView | None, GateView | None], Decision]


class Move(BaseModel):
    """One move of `production` (or a refused attempt, with `refused` saying why): who moved it from which version
    to which, and when."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    action: Literal["promote", "rollback"]
    who: str
    when: str
    from_: str | None = Field(alias="from")
    to: str
    refused: str | None = None

    def as_json(self) -> dict:
        """As the history tag and the audit tags keep it: {"action", "who", "when", "from", "to"[, "refused"]}."""
        return self.model_dump(by_alias=True, exclude={"refused"} if self.refused is None else set())


def _move(action: str, current: str | None, to: str) -> Move:
    return Move(
        action=action, who=actor(), when=datetime.now(UTC).isoformat(timespec="microseconds"), from_=current, to=to
    )


def _history(c: MlflowClient, name: str) -> list[Move]:
    return [Move.model_validate(h) for h in json.loads(c.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))]


def _record(c: MlflowClient, name: str, move: Move) -> None:
    c.set_registered_model_tag(name, HISTORY_TAG, json.dumps([h.as_json() for h in _history(c, name) + [move]]))


def _audit(c: MlflowClient, name: str, move: Move) -> None:
    stamp = datetime.fromisoformat(move.when).strftime("%Y%m%dT%H%M%S.%fZ")  # tag keys allow no '+'
    for v in (move.to, move.from_):
        if v:
            c.set_model_version_tag(name, v, f"audit.{stamp}.{move.action}", json.dumps(move.as_json()))


def _move_production(c: MlflowClient, name: str, move: Move) -> None:
    """Point `production` at move.to, archive the version it replaces, and record the move."""
    c.set_registered_model_alias(name, PRODUCTION, move.to)
    if ARCHIVED in c.get_model_version(name, move.to).tags:  # a rollback brings an archived version back
        c.delete_model_version_tag(name, move.to, ARCHIVED)
    if move.from_:
        c.set_model_version_tag(
            name, move.from_, ARCHIVED, json.dumps({"when": move.when, "by": move.who, "replaced_by": move.to})
        )
    _record(c, name, move)
    _audit(c, name, move)


def _refuse(c: MlflowClient, name: str, move: Move, reason: str) -> None:
    """Record a refused attempt in the history (who tried what, and why), then refuse."""
    _record(c, name, move.model_copy(update={"refused": reason}))
    raise PromotionError(reason)


def _holder(c: MlflowClient, name: str) -> str | None:
    mv = version_by_alias(c, name, PRODUCTION)
    return str(mv.version) if mv else None


def promote(name: str, version: str, gate_check: GateCheck) -> Move:
    """Move `production` to `version` if its artifact is intact and `gate_check` passes on the validation metrics
    it recorded. Serialized: when another promotion moves `production` while this one waits for the lock, this one
    is refused rather than silently overriding it."""
    c = client()
    seen = _holder(c, name)
    with registry_lock(name):
        current = version_by_alias(c, name, PRODUCTION)
        cur = str(current.version) if current else None
        move = _move("promote", cur, str(version))
        if cur != seen:
            _refuse(
                c,
                name,
                move,
                f"{PRODUCTION} of {name} moved from version {seen} to {cur} while this "
                f"promotion of version {version} waited; nothing was changed: review version "
                f"{cur} and promote again if {version} should replace it",
            )
        if cur == str(version):
            raise PromotionError(f"{name} version {version} already holds '{PRODUCTION}'")
        mv = c.get_model_version(name, version)
        _check(c, name, mv, move, current, gate_check)
        _move_production(c, name, move)
    return move


def _check(c: MlflowClient, name: str, mv, move: Move, current, gate_check: GateCheck) -> None:
    """Refuse a version registered only partly, an artifact that changed since, or one the gate fails."""
    if COMPLETE not in mv.tags:
        _refuse(
            c,
            name,
            move,
            f"{name} version {mv.version} was never completely registered (the run that "
            "registered it stopped midway); the next run of that dataset deletes it",
        )
    try:
        with tempfile.TemporaryDirectory(prefix="edgekd-download-") as tmp:
            verify_artifact(c, name, mv, Path(tmp))
    except IntegrityError as e:
        _refuse(c, name, move, str(e))
    decision = gate_check(
        gate_view(mv),
        gate_view(mv, "teacher_val."),
        gate_view(current) if current else None,
        gate_view(mv, "plain_val."),
    )
    if not decision.passed:
        _refuse(
            c,
            name,
            move,
            f"{name} version {mv.version} fails the gate against "
            f"{'version ' + move.from_ if move.from_ else 'no production version'}:\n  - "
            + "\n  - ".join(decision.reasons),
        )


def production_stack(history: list[Move]) -> list[str]:
    """Versions that held production, oldest first: promote pushes, rollback pops (refused attempts don't count)."""
    stack: list[str] = []
    for h in history:
        if h.refused is not None:
            continue
        if h.action == "promote":
            stack.append(h.to)
        elif h.action == "rollback" and stack:
            stack.pop()
    return stack


def rollback(name: str) -> Move:
    """Give `production` back to the version that held it before the current one."""
    c = client()
    with registry_lock(name):
        cur = _holder(c, name)
        if cur is None:
            raise PromotionError(f"{name} has no '{PRODUCTION}' version to roll back")
        stack = production_stack(_history(c, name))
        if len(stack) < 2 or stack[-1] != cur:
            raise PromotionError(
                f"{name} version {cur} holds '{PRODUCTION}' with no earlier holder "
                "recorded by promote; nothing to roll back to"
            )
        move = _move("rollback", cur, stack[-2])
        _move_production(c, name, move)
    return move


def history(name: str) -> list[Move]:
    """Every promotion, rollback and refused attempt of `name`, oldest first."""
    c = client()
    c.get_registered_model(name)  # a clear MlflowException for an unknown model
    return _history(c, name)
