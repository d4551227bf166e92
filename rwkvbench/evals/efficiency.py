"""Efficiency versus context length, each family at its best, through the SequenceModel interface.

Per (batch size, context length), one unit of work: prefill latency and tokens/s (= time to first token,
only the last logits computed), decode latency per token at that context (after `prepare_decode` puts
the state in the model's fastest form: graph-captured RWKV step, static KV cache and compiled forward for
Transformers), decode tokens/s, state / KV-cache bytes, and on CUDA the peak allocated memory of prefill
and of decode next to the weights' bytes. Times are medians with their standard error, the spread in
`_p10` / `_p90` rows, `n` the timed runs; `variant` records what actually ran.

Budgets hold: each point gets `max_seconds_per_point` for its warm-up, prefill repeats (60%) and decode
steps (the rest), doing fewer repeats when a run is slow; a point predicted to need more than that for a
single prefill (linear in tokens from the last point of its batch size), or beyond `max_context_len` on
this device, becomes a `skipped` row, and so does everything left when the run's `max_minutes` is up.
Those three keys may be given per device type ({cpu: ..., cuda: ...}).
"""

from __future__ import annotations

import math
import time

import torch

from rwkvbench.evals import register
from rwkvbench.timing import repeat_ms, timing_rows
from rwkvbench.units import Budget, SkipUnit, Unit, _is_oom, for_device

PREFILL_SHARE = 0.6  # of a point's budget; the decode steps get the rest


def _peak_reset(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trend:
    """What earlier points of one batch size showed: the last prefill time, and where memory ran out."""

    def __init__(self):
        self.last: dict[int, tuple[int, float]] = {}  # batch -> (context, seconds of one prefill)
        self.oom_at: dict[int, int] = {}  # batch -> shortest context that ran out of memory

    def check(self, L: int, B: int, seconds: float | None) -> None:
        if B in self.oom_at and L > self.oom_at[B]:
            raise SkipUnit(f"batch {B} ran out of memory at the shorter context {self.oom_at[B]}")
        if B in self.last and seconds is not None:
            L0, s0 = self.last[B]
            predicted = s0 * L / L0
            if L > L0 and predicted > seconds:
                raise SkipUnit(f"one prefill predicted to take {predicted:.0f} s (linear from {s0:.2f} s at {L0} "
                               f"tokens) > max_seconds_per_point={seconds:g}")


def measure_prefill(model, ids, repeats: int, budget: Budget) -> tuple[list[dict], tuple]:
    """Prefill timings; also returns the (logits, state) of the last run for the decode measurement."""
    dev = model.device
    out: dict = {}

    def prefill():
        out.pop("result", None)  # free the last state first: peak memory is one prefill's
        out["result"] = model.prefill(ids, logits="last")

    _peak_reset(dev)
    t0 = time.perf_counter()
    prefill()  # warm-up: compilation, allocator, caches
    _sync(dev)
    first_s = time.perf_counter() - t0
    share = Budget(PREFILL_SHARE * budget.remaining() - first_s)
    left = max(share.remaining(), 0.0)
    n = repeats if math.isinf(left) or first_s <= 0 else min(repeats, int(left / first_s))
    if n >= 1:
        times, note = repeat_ms(prefill, dev, n, 0, budget=share), None
    else:
        times, note = [first_s * 1e3], "one cold run (warm-up included): no timed repeat fit the budget"
    B, T = ids.shape
    rows = timing_rows("prefill_ms", times, note)
    rows += [{**r, "metric": r["metric"].replace("prefill_ms", "time_to_first_token_ms")} for r in rows]
    median = rows[0]["value"]
    rows.append({"metric": "prefill_tokens_per_s", "value": B * T / median * 1e3, "n": len(times)})
    if dev.type == "cuda":
        rows.append({"metric": "prefill_peak_bytes", "value": _peak(dev), "n": len(times) + 1})
    return rows, out.pop("result")


def measure_decode(model, logits, state, steps: int, warmup: int, budget: Budget) -> list[dict]:
    dev = model.device
    state = model.prepare_decode(state, steps + warmup)
    _peak_reset(dev)
    tok = logits.argmax(-1)

    def one_step():
        nonlocal tok, state
        out, state = model.step(tok, state)
        tok = out.argmax(-1)

    times = repeat_ms(one_step, dev, steps, max(warmup, 1), budget=budget, min_repeats=3)
    B = tok.shape[0]
    rows = timing_rows("decode_ms_per_token", times)
    rows += [{"metric": "decode_tokens_per_s", "value": B / rows[0]["value"] * 1e3, "n": len(times)},
             {"metric": "state_bytes", "value": model.state_nbytes(state), "n": 1}]
    if dev.type == "cuda":
        rows.append({"metric": "decode_peak_bytes", "value": _peak(dev), "n": len(times)})
    return rows


def measure_point(model, L: int, B: int, task, trend: Trend, budget: Budget) -> list[dict]:
    trend.check(L, B, budget.seconds)
    g = torch.Generator().manual_seed(int(task.get("seed", 0)))
    ids = torch.randint(0, model.tokenizer.vocab_size, (B, L), generator=g).to(model.device)
    try:
        rows, (logits, state) = measure_prefill(model, ids, int(task.repeats), budget)
        prefill_path = model.prefill_config
        trend.last[B] = (L, next(r["value"] for r in rows if r["metric"] == "prefill_ms") / 1e3)
        rows += measure_decode(model, logits, state, int(task.decode_steps), int(task.warmup), budget)
    except Exception as e:
        if _is_oom(e):
            trend.oom_at[B] = min(L, trend.oom_at.get(B, L))
        raise
    rows.append({"metric": "weights_bytes", "value": model.weights_nbytes, "n": 1})
    variant = f"prefill={prefill_path};decode={model.decode_config}"
    return [{**r, "variant": variant} for r in rows]


@register("efficiency")
def units(model, task) -> list[Unit]:
    device = model.device
    seconds = for_device(task.get("max_seconds_per_point"), device)
    max_len = for_device(task.get("max_context_len"), device)
    params = {k: task.get(k) for k in ("repeats", "warmup", "decode_steps", "seed")} | {"max_seconds": seconds}
    trend = Trend()
    out = []
    for B in task.batch_sizes:
        for L in task.context_lens:
            if max_len is not None and L > max_len:
                def measure(budget, L=L):
                    raise SkipUnit(f"context {L} > max_context_len={max_len} for {device.type}")
            else:
                def measure(budget, L=L, B=B):
                    return measure_point(model, L, B, task, trend, budget)
            out.append(Unit(key={"suite": "efficiency", "task": task.name, "context_len": L, "batch_size": B},
                            measure=measure, params=params, label=f"B={B} T={L}", seconds=seconds))
    return out
