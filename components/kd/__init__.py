"""Knowledge-distillation methods: one registered class each, picked by name in params.yaml (`distill.method`).

A method has typed, described options (a pydantic model: unknown keys and out-of-range values are errors) and
builds the training objective of the student from a frozen teacher. To add one: subclass `KDMethod`, give it a
`name`, an `Options` model and a `loss` (or override `objective` / `training_set` / `variants` where it needs
more), decorate it with `@register`, and add a unit test with hand-computed values to tests/components/test_kd.py.

The student of every method gets the same budget as the plain student (components.train.fit with the `student`
section); only the objective differs. Every method here keeps a label term unless its paper drops it.
"""

from __future__ import annotations

# Each module registers its methods on import, in this order (the order of `bench kd`'s default methods).
from components.kd import logits  # noqa: F401

# isort: split
from components.kd import pool  # noqa: F401

# isort: split
from components.kd import features  # noqa: F401

# isort: split
from components.kd.base import (
    FEATURES_NEED,
    METHODS,
    PLAIN,
    KDConfigError,
    KDMethod,
    LogitObjective,
    Options,
    TeacherSignal,
    Variant,
    describe,
    make,
    register,
    resolve,
    soft_kl,
)

__all__ = [
    "FEATURES_NEED",
    "METHODS",
    "PLAIN",
    "KDConfigError",
    "KDMethod",
    "LogitObjective",
    "Options",
    "TeacherSignal",
    "Variant",
    "describe",
    "make",
    "register",
    "resolve",
    "soft_kl",
]
