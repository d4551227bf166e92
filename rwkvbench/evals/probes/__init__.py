"""Recall probes: copy, phone book, multi-query associative recall and passkey, each after its source paper.

A probe turns a point of its sweep (a context length and a variant such as `kind=natural` or
`depth=0.50;order=question_first`) into items (rwkvbench/evals/probes/items.py) in the model's own token
space, deterministically from a seed; `scoring.py` scores any probe's items through the SequenceModel
interface alone; the `recall` evaluator (rwkvbench/evals/recall.py) makes them units and rows. The
probes' fixed texts and formats (templates, filler, names) are data: conf/probes/<probe>.yaml.
"""

from __future__ import annotations

from rwkvbench.errors import ConfigError

PROBES: dict[str, type] = {}


def probe(name: str):
    def deco(cls):
        cls.name = name
        PROBES[name] = cls
        return cls

    return deco


class Probe:
    """One probe's item generator over its sweep. Subclasses set `name` (by @probe) and implement
    variants / unfit / items."""

    name = ""
    reported: tuple[str, ...] = ()  # item.meta keys reported as rows (mean over the items scored)
    keys: tuple[str, ...] = ()  # the task part keys this probe reads (besides the recall evaluator's)

    def __init__(self, tokenizer, fmt: dict, task):
        self.tokenizer, self.fmt, self.task = tokenizer, fmt, task

    @classmethod
    def check(cls, task) -> None:
        """The part's settings and data files, checked before any model loads (a bad one: one line)."""

    def variants(self) -> list[dict]:
        """The variant parameters swept besides context length, in order."""
        raise NotImplementedError

    def unfit(self, context_len: int, variant: dict) -> str | None:
        """Why this point cannot be built (it becomes a `skipped` row), or None."""
        return None

    def items(self, context_len: int, variant: dict, seed: int) -> list:
        raise NotImplementedError

    def params(self, variant: dict) -> dict:
        """What else decides the items (besides the format, the part's settings and the seed): e.g. a data
        file's hash."""
        return {}


def choose(value, valid, key: str):
    """A config list checked against what is valid: one line naming the key otherwise."""
    values = list(value)
    bad = [v for v in values if v not in valid]
    if bad or not values:
        raise ConfigError(f"{key}={values}: expected a non-empty list of {', '.join(map(str, valid))}")
    return values


def get_probe(name: str) -> type:
    from rwkvbench.evals.probes import copying, mqar, passkey, phonebook  # noqa: F401  (registration)

    if name not in PROBES:
        raise ConfigError(f"probe={name!r}: unknown; valid: {', '.join(sorted(PROBES))}")
    return PROBES[name]
