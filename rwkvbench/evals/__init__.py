"""Evaluators: each takes a SequenceModel and its task config and describes units of work
(rwkvbench/units.py); they never write files and never branch on model family.

A suite may also register a summarizer: after every model of a run has been measured, it reads the run's
rows (and the side files its units saved) and returns summary rows across templates, models or families
(e.g. the spread of accuracy across prompt templates, RWKV against the Transformer)."""

from __future__ import annotations

from typing import Callable

EVALUATORS: dict[str, Callable] = {}
SUMMARIZERS: dict[str, Callable] = {}
# The keys a task part may set: these, its evaluator's, and for recall its probe's. Others are refused
# before anything loads (Hydra's `+task.parts.0.<typo>=` would otherwise be ignored in silence).
COMMON_PART_KEYS = ("evaluator", "name", "max_minutes")
PART_KEYS: dict[str, Callable] = {}


def register(name: str, keys: tuple[str, ...] | Callable = ()):
    """An evaluator, with the part keys it reads: a tuple, or part -> keys where they depend on the part."""
    def deco(fn):
        EVALUATORS[name] = fn
        PART_KEYS[name] = keys if callable(keys) else (lambda part, keys=tuple(keys): keys)
        return fn

    return deco


def part_keys(part) -> set[str]:
    """Every key a task part of this evaluator may set."""
    _import_all()
    return set(COMMON_PART_KEYS) | set(PART_KEYS[part.evaluator](part))


def register_summary(name: str):
    """summarizer(results: DataFrame, out_dir: Path, task_cfg) -> list of complete rows (each with its
    own model / family / suite / task columns)."""

    def deco(fn):
        SUMMARIZERS[name] = fn
        return fn

    return deco


def get_evaluator(name: str) -> Callable:
    _import_all()
    if name not in EVALUATORS:
        raise ValueError(f"unknown evaluator {name!r}; valid: {', '.join(sorted(EVALUATORS))}")
    return EVALUATORS[name]


def get_summarizer(name: str) -> Callable | None:
    _import_all()
    return SUMMARIZERS.get(name)


def _import_all():
    from rwkvbench.evals import efficiency, perplexity, prompts, quality, recall  # noqa: F401  (registration)
