import pytest

from flows.tracking.promotion import Move, production_stack
from flows.tracking.tracker import flatten

pytestmark = pytest.mark.unit


def move(action: str, to: str, refused: str | None = None) -> Move:
    return Move(action=action, who="me", when="2026-12-02T00:00:00+00:00", from_=None, to=to, refused=refused)


def test_production_stack_promote_pushes_rollback_pops():
    h = [move("promote", "1"), move("promote", "2"), move("promote", "3"), move("rollback", "2")]
    assert production_stack(h) == ["1", "2"]
    assert production_stack(h + [move("rollback", "1")]) == ["1"]
    assert production_stack(h + [move("promote", "4", refused="fails the gate")]) == ["1", "2"]
    assert production_stack([]) == []


def test_a_move_keeps_the_history_tags_format():
    m = Move.model_validate({"action": "promote", "who": "me", "when": "t", "from": None, "to": "1"})
    assert m.as_json() == {"action": "promote", "who": "me", "when": "t", "from": None, "to": "1"}
    assert m.model_copy(update={"refused": "why"}).as_json()["refused"] == "why"


def test_flatten_nested_params():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_a_card_longer_than_the_registry_holds_is_cut_at_a_line_with_a_pointer_to_the_whole_card():
    from flows.tracking.registry import DESCRIPTION_LIMIT, fit_description

    short = "# Model card\n\nsmall\n"
    assert fit_description(short) == short
    card = "# Model card\n" + "".join(f"| row {i} | {'x' * 60} |\n" for i in range(200))
    cut = fit_description(card)
    assert len(card) > DESCRIPTION_LIMIT >= len(cut)
    body, note = cut.split("\n\n… ")
    assert card.startswith(body + "\n") and body.endswith("|")  # whole lines only
    assert "the whole card is `model_card.md` among this version's files" in note
