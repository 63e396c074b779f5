"""The constraint level a schema gets (exact, relaxed, none), judged before a model is loaded.

The engine's grammar compiler picks the level per schema when it compiles (model/constraint.py);
this asks the grammar engine the same question without a vocabulary, for `flashbeam validate`,
the manifest and `task.constraint: exact`. Both see the same refusals; only a bound that depends
on the vocabulary (a lexer limit) can differ.
"""

from __future__ import annotations

from typing import Any

from flashbeam.model.grammar.constraint import ConstraintPlan, plan_without_tokenizer
from flashbeam.schemas.loading import load_schema


def schema_constraint(schema: Any) -> ConstraintPlan:
    """The level and relaxations of `schema` (any source `load_schema` accepts)."""
    return plan_without_tokenizer(load_schema(schema))


def constraint_summary(plan: ConstraintPlan) -> dict[str, Any]:
    """The plan as JSON: level, each relaxation (path, change, reason), why the level is none."""
    summary: dict[str, Any] = {"level": plan.level}
    if plan.relaxations:
        summary["relaxed"] = [
            {"path": r.path, "change": r.change, "reason": r.reason} for r in plan.relaxations
        ]
    if plan.reason:
        summary["reason"] = plan.reason
    return summary
