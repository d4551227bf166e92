"""Recall as the context grows (DESIGN.md question 2): copy, phone book, associative recall and passkey
probes (rwkvbench/evals/probes/), the same code for both families.

One unit of work per (context length, variant) of a part's probe. Its rows: `exact_match` (greedy
decoding reproduces the answer; binomial standard error), `token_accuracy` (answer tokens that are the
argmax given the gold prefix), `answer_logprob` and `answer_logprob_per_token` (the gold answer's
log-likelihood, nats), each over n answers (items, or queries for MQAR and the phone book); the
per-sequence `state_bytes` at the end of an item (recurrent state or KV cache: recall against memory
held), `context_tokens` (the items' mean length), probe facts (phone book `entries`) and `wall_seconds`.

Budgets hold: a unit gets max_seconds_per_unit and scores fewer items when slow (its rows say how many in
`n` and a note); a unit predicted (from the fastest rate seen so far) to need more than that for one item,
a context beyond max_context_len on this device, and any context at or past one where a single item ran
out of memory become `skipped` rows; running out of memory with one item becomes the runner's `oom` row.
A context whose state alone cannot fit the device (the per-token growth of the state measured on two short
prefills, times the context, more than the device's memory less the weights: a KV cache at a million
tokens) is an `oom` row at once, "predicted", without the minutes an attempt would take; those units come
first, so a run's time budget never turns them into `skipped`.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import torch
from omegaconf import OmegaConf

from rwkvbench.config import load_option
from rwkvbench.evals import register
from rwkvbench.evals.probes import get_probe
from rwkvbench.evals.probes.items import variant_label
from rwkvbench.evals.probes.scoring import Scores, score_items
from rwkvbench.units import Budget, SkipUnit, Unit, is_oom, for_device

ITEM_COUNTS = ("n_items", "books", "queries_per_book")


def probe_format(task) -> dict:
    """conf/probes/<probe>.yaml with the part's `format` overrides merged in."""
    fmt = load_option("probes", task.probe)
    return OmegaConf.to_container(OmegaConf.merge(fmt, task.get("format") or {}), resolve=True)


def mean_and_se(x: np.ndarray) -> tuple[float, float | None]:
    return float(x.mean()), (float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else None)


def score_rows(scores: Scores) -> list[dict]:
    n = len(scores.answers)
    exact = float(np.mean([a.correct.all() for a in scores.answers]))
    rows = [{"metric": "exact_match", "value": exact, "stderr": math.sqrt(exact * (1 - exact) / n), "n": n}]
    for metric, values in (("token_accuracy", [a.correct.mean() for a in scores.answers]),
                           ("answer_logprob", [a.logprob.sum() for a in scores.answers]),
                           ("answer_logprob_per_token", [a.logprob.mean() for a in scores.answers])):
        value, se = mean_and_se(np.asarray(values, dtype=np.float64))
        rows.append({"metric": metric, "value": value, "stderr": se, "n": n})
    return rows


class Trend:
    """What earlier units of this model and part showed: the fastest seconds per token, and the shortest
    context where a single item ran out of memory."""

    def __init__(self):
        self.seconds_per_token: float | None = None
        self.oom_at: tuple[int, str] | None = None

    def per_item(self, tokens: int) -> float | None:
        return None if self.seconds_per_token is None else self.seconds_per_token * tokens

    def check(self, context_len: int, tokens: int, budget: Budget) -> None:
        if self.oom_at is not None and context_len >= self.oom_at[0]:
            raise SkipUnit(f"one item ran out of memory at context_len={self.oom_at[0]} ({self.oom_at[1]})")
        predicted = self.per_item(tokens)
        if predicted is not None and predicted > budget.remaining():
            raise SkipUnit(f"one item predicted to take {predicted:.0f} s (at the fastest rate seen, "
                           f"{self.seconds_per_token * 1e6:.2f} us/token) > the {budget.remaining():.0f} s left")

    def record(self, tokens: int, seconds: float) -> None:
        rate = seconds / max(tokens, 1)
        self.seconds_per_token = rate if self.seconds_per_token is None else min(self.seconds_per_token, rate)


def measure(model, probe, task, context_len: int, variant: dict, trend: Trend, budget: Budget) -> list[dict]:
    label = variant_label(variant)
    trend.check(context_len, context_len, budget)
    items = probe.items(context_len, variant, int(task.seed))
    tokens = int(np.mean([len(it.ids) for it in items]))
    t0 = time.perf_counter()
    try:
        scores = score_items(model, items, int(task.batch_size), budget, per_item_guess=trend.per_item(tokens))
    except Exception as e:
        if is_oom(e) and (trend.oom_at is None or context_len < trend.oom_at[0]):
            trend.oom_at = (context_len, label)
        raise
    seconds = time.perf_counter() - t0
    ran = scores.items
    trend.record(sum(len(it.ids) for it in ran), seconds)
    notes = []
    if len(ran) < len(items):
        notes.append(f"time budget: {len(ran)} of {len(items)} items scored")
    if model.max_context is not None and context_len > model.max_context:
        notes.append(f"beyond the model's max_context={model.max_context}")
    rows = score_rows(scores)
    rows.append({"metric": "state_bytes", "value": scores.state_bytes, "n": 1})
    rows.append({"metric": "context_tokens", "value": float(np.mean([len(it.ids) + 1 for it in ran])), "n": len(ran)})
    for key in probe.reported:
        rows.append({"metric": key, "value": float(np.mean([it.meta[key] for it in ran])), "n": len(ran)})
    rows.append({"metric": "wall_seconds", "value": seconds, "n": 1})
    note = "; ".join(notes) or None
    return [{**r, "note": note} for r in rows]


def device_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


@torch.inference_mode()
def state_growth(model) -> tuple[float, float]:
    """One sequence's state: bytes at no context and bytes per token, from prefills of 16 and 32 tokens
    (a KV cache grows linearly, a recurrent state not at all)."""
    sizes = [model.state_nbytes(model.prefill(model.as_ids([[model.tokenizer.eos_token_id] * n]), logits="none")[1])
             for n in (16, 32)]
    per_token = (sizes[1] - sizes[0]) / 16
    return sizes[0] - 16 * per_token, per_token


def certain_oom(model, context_lens: list[int]) -> dict[int, str]:
    """Contexts at which one sequence's state alone exceeds the device's memory less the weights."""
    total = device_memory(model.device)
    if total is None:
        return {}
    base, per_token = state_growth(model)
    room = total - model.weights_nbytes
    gib = 2.0**30
    return {L: (f"predicted, not attempted: one item's state alone needs {(base + per_token * L) / gib:.1f} GiB at "
                f"{L} tokens ({per_token / 1024:.1f} KiB per token) > {room / gib:.1f} GiB of "
                f"{model.describe()['device_name']} left by the weights")
            for L in context_lens if base + per_token * L > room}


def recall_keys(part) -> tuple[str, ...]:
    probe = get_probe(part.probe).keys if part.get("probe") else ()
    return ("probe", "context_lens", "batch_size", "seed", "format", "max_context_len", "max_seconds_per_unit",
            *probe)


@register("recall", keys=recall_keys)
def units(model, task) -> list[Unit]:
    probe_class = get_probe(task.probe)  # an unknown name fails here, in one line
    fmt = probe_format(task)
    probe = probe_class(model.tokenizer, fmt, task)
    seconds = for_device(task.get("max_seconds_per_unit"), model.device)
    max_len = for_device(task.get("max_context_len"), model.device)
    common = {"seed": int(task.seed), "max_seconds": seconds, "format": fmt,
              **{k: task[k] for k in ITEM_COUNTS if k in task}}
    trend = Trend()
    lens = sorted(int(c) for c in task.context_lens)  # shortest first: later points learn from earlier ones
    oom = certain_oom(model, [L for L in lens if max_len is None or L <= max_len])
    out = []
    for L in sorted(lens, key=lambda L: L not in oom):  # certain out-of-memory points first: they cost nothing
        for variant in probe.variants():
            reason = probe.unfit(L, variant)
            if reason is None and max_len is not None and L > max_len:
                reason = f"context {L} > max_context_len={max_len} for {model.device.type}"
            if reason is not None:
                def run(budget, reason=reason):
                    raise SkipUnit(reason)
            elif L in oom:
                def run(budget, note=oom[L]):
                    raise torch.OutOfMemoryError(note)
            else:
                def run(budget, L=L, variant=variant):
                    return measure(model, probe, task, L, variant, trend, budget)
            label = variant_label(variant)
            out.append(Unit(key={"suite": "recall", "task": task.name, "variant": label, "context_len": L},
                            measure=run, params={**common, **variant, **probe.params(variant)},
                            label=f"{label} T={L}", seconds=seconds))
    return out
