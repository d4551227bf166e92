"""Evaluators: each takes a SequenceModel, its task config and the results writer, and appends tidy rows
per finished unit of work. They never branch on model family."""

from __future__ import annotations

from typing import Callable

EVALUATORS: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        EVALUATORS[name] = fn
        return fn

    return deco


def get_evaluator(name: str) -> Callable:
    _import_all()
    if name not in EVALUATORS:
        raise ValueError(f"unknown evaluator {name!r}; valid: {', '.join(sorted(EVALUATORS))}")
    return EVALUATORS[name]


def _import_all():
    from rwkvbench.evals import efficiency, perplexity, quality  # noqa: F401  (registration)
