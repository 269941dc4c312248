from flows.tracking import flatten, production_stack


def test_production_stack_promote_pushes_rollback_pops():
    h = [{"action": "promote", "to": "1"}, {"action": "promote", "to": "2"}, {"action": "promote", "to": "3"},
         {"action": "rollback", "to": "2"}]
    assert production_stack(h) == ["1", "2"]
    assert production_stack(h + [{"action": "rollback", "to": "1"}]) == ["1"]
    assert production_stack([]) == []


def test_flatten_nested_params():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
