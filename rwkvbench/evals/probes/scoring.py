"""Scoring recall items through the SequenceModel interface alone, for any probe and either family.

One teacher-forced pass over an item's ids gives, at every answer token, whether it is the model's argmax
(all of an answer's: greedy decoding reproduces it exactly; `greedy_decode` below is the plain reference
that decodes step by step, and the tests hold the two equal) and its log-probability. Items of one group
share their longest common prefix (a haystack): it is prefilled once, without logits, and its state
forked with `repeat_state` for each batch of items. Everything before the first answer of a batch runs
without logits, in chunks; logits are computed only where answers are, in chunks bounded in memory, and
only the answer rows go through log_softmax, so a million-token passkey never holds more than a chunk.

Batches shrink when memory runs out (a batch of one is tried once more without the shared prefix: forking
a KV cache copies it; if that does not fit either the error stands and the runner
writes an `oom` row) and when the time budget would not hold another batch (`Scores.items` says how
many ran).
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from rwkvbench.evals.probes.items import Item
from rwkvbench.units import is_oom

FEED_CHUNK = 4096  # tokens per prefill call after a state exists (RWKV's own chunk; a KV cache's mask is chunk x cache)
LOGIT_FLOATS = 1 << 27  # fp32 logits held at once (512 MiB)


@dataclass
class AnswerScore:
    correct: np.ndarray  # bool per answer token: the argmax given the gold prefix
    logprob: np.ndarray  # float per answer token


@dataclass
class Scores:
    answers: list[AnswerScore] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)  # the items scored, in the order they ran
    state_bytes: int = 0  # largest per-sequence state at the end of an item
    seconds_per_item: float | None = None  # of the last batch


def common_prefix(arrays: list[np.ndarray]) -> int:
    n = min(len(a) for a in arrays)
    for a in arrays[1:]:
        diff = np.flatnonzero(a[:n] != arrays[0][:n])
        if len(diff):
            n = int(diff[0])
    return n


def targets(item: Item, start: int) -> np.ndarray:
    """Per position of ids[start:]: the gold token its logits must predict, or -1."""
    t = np.full(len(item.ids) - start, -1, dtype=np.int64)
    for a in item.answers:
        t[a.pos - start : a.pos - start + len(a.tokens)] = a.tokens
    return t


def feed(model, ids: torch.Tensor, state):
    """Advance the state over ids (B, T) without logits. From no state, one call (the model chunks as it
    runs best: RWKV in 4096-token chunks, attention causal over the whole input); from a state, calls of
    FEED_CHUNK tokens (attention to a cache takes an explicit mask of chunk x cache)."""
    if state is None and ids.shape[1]:
        _, state = model.prefill(ids, None, logits="none")
        return state
    for lo in range(0, ids.shape[1], FEED_CHUNK):
        _, state = model.prefill(ids[:, lo : lo + FEED_CHUNK], state, logits="none")
    return state


@torch.inference_mode()
def score_batch(model, rest: np.ndarray, tgt: np.ndarray, state):
    """Teacher-forced pass over rest (B, T) from `state`. Returns correct (B, T) bool, logprob (B, T)
    (valid where tgt >= 0) and the final state."""
    B, T = rest.shape
    ids = model.as_ids(rest)
    need = (tgt >= 0).any(axis=0)
    chunk = int(max(1, min(FEED_CHUNK, LOGIT_FLOATS // (B * model.vocab_size))))
    correct, logprob = np.zeros((B, T), dtype=bool), np.zeros((B, T), dtype=np.float64)
    pos, end = int(np.argmax(need)), int(np.flatnonzero(need)[-1]) + 1
    state = feed(model, ids[:, :pos], state)
    while pos < end:
        gap = int(np.argmax(need[pos:]))  # positions to the next answer: fed without logits if long
        if gap >= chunk:
            state = feed(model, ids[:, pos : pos + gap], state)
            pos += gap
            continue
        stop = min(pos + chunk, end)
        logits, state = model.prefill(ids[:, pos:stop], state, logits="all")
        gold = torch.as_tensor(tgt[:, pos:stop], device=logits.device)
        mask = gold >= 0
        rows, want = logits[mask].float(), gold[mask]
        hit = rows.argmax(-1) == want
        lp = torch.log_softmax(rows, -1).gather(-1, want[:, None]).squeeze(-1)
        where = mask.cpu().numpy()
        correct[:, pos:stop][where] = hit.cpu().numpy()
        logprob[:, pos:stop][where] = lp.double().cpu().numpy()
        del logits, rows
        pos = stop
    return correct, logprob, state


def _pow2_floor(n: int) -> int:
    """Batch sizes are powers of two: few shapes for a compiled prefill to specialise on (one compile each)."""
    return 1 << (max(1, n).bit_length() - 1)


def _out_of_memory(fn):
    """fn()'s result, or the error's message when it ran out of memory; the memory is released after the
    error (and the frames it holds) is gone."""
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001  (only out-of-memory is caught)
        if not is_oom(e):
            raise
        message = str(e)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return None, message


def buckets(group: list[Item]) -> list[list[Item]]:
    """Items of equal length together (a batch needs equal lengths), in order of first appearance."""
    out: dict[int, list[Item]] = {}
    for it in group:
        out.setdefault(len(it.ids), []).append(it)
    return list(out.values())


@torch.inference_mode()
def score_items(model, items: list[Item], batch_size: int, budget=None, per_item_guess: float | None = None) -> Scores:
    """Score items group by group (their common prefix prefilled once), in batches of equal length, of at
    most `batch_size` and as many as the budget holds at the last batch's seconds per item (at first
    `per_item_guess`), rounded down to a power of two. At least one item is scored; the budget stops the
    rest."""
    out = Scores()
    groups: dict[int, list[Item]] = {}
    for it in items:
        groups.setdefault(it.group, []).append(it)
    per_item, cap = per_item_guess, max(1, int(batch_size))  # cap halves for good when memory runs out

    def fits() -> int | None:  # items the budget holds, None when unknown or unlimited
        left = math.inf if budget is None else budget.remaining()
        if per_item is None or per_item <= 0 or math.isinf(left):
            return None
        return int(left / per_item)

    for group in groups.values():
        first_answer = min(a.pos for it in group for a in it.answers)
        shared = min(common_prefix([it.ids for it in group]), first_answer)
        prefix = feed(model, model.as_ids(group[0].ids[:shared]), None) if shared else None
        todo = buckets(group)
        while todo:
            bucket, fit = todo[0], fits()
            if out.items and fit is not None and fit < 1:
                return out
            take = _pow2_floor(min(cap, len(bucket), cap if fit is None else max(fit, 1)))
            batch, last_use = bucket[:take], len(todo) == 1 and len(bucket) == take == 1

            def run():
                if prefix is None:
                    state = None
                elif last_use:  # the prefix's last use: no copy
                    state = prefix
                else:
                    state = model.repeat_state(prefix, take)
                rest = np.stack([it.ids[shared:] for it in batch])
                correct, logprob, state = score_batch(model, rest, np.stack([targets(it, shared) for it in batch]), state)
                return correct, logprob, model.state_nbytes(state) // take

            t0 = time.perf_counter()
            result, oom = _out_of_memory(run)
            if oom is not None:
                if take > 1:
                    cap = take // 2
                elif shared:  # one item forked from the prefix does not fit: feed it whole instead
                    prefix, shared = None, 0
                    gc.collect()
                else:
                    raise torch.OutOfMemoryError(oom)
                continue
            if last_use:
                prefix = None
            correct, logprob, state_bytes = result
            out.state_bytes = max(out.state_bytes, state_bytes)
            for b, it in enumerate(batch):
                for a in it.answers:
                    span = slice(a.pos - shared, a.pos - shared + len(a.tokens))
                    out.answers.append(AnswerScore(correct[b, span], logprob[b, span]))
                out.items.append(it)
            per_item = out.seconds_per_item = (time.perf_counter() - t0) / take
            del bucket[:take]
            if not bucket:
                todo.pop(0)
        prefix = None
    return out


@torch.inference_mode()
def greedy_decode(model, item: Item) -> list[np.ndarray]:
    """The plain reference: for each answer, prefill the ids before it, then decode greedily one `step` at
    a time for as many tokens as the answer has. Returns the decoded tokens per answer."""
    decoded = []
    for a in item.answers:
        logits, state = model.prefill(model.as_ids(item.ids[: a.pos + 1]), logits="last")
        tokens = [int(logits.argmax(-1))]
        for _ in range(len(a.tokens) - 1):
            logits, state = model.step(torch.tensor([tokens[-1]]), state)
            tokens.append(int(logits.argmax(-1)))
        decoded.append(np.asarray(tokens))
    return decoded
