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
this device, becomes a `skipped` row, and so does everything left when the run's `max_minutes` is up; a
point whose state (KV cache), extrapolated linearly from the last two points, would not fit beside the
weights in the device's memory becomes an `oom` row whose note says it was predicted.
Those three keys may be given per device type ({cpu: ..., cuda: ...}).
"""

from __future__ import annotations

import torch

from rwkvbench.evals import register
from rwkvbench.timing import repeat_ms, timing_rows
from rwkvbench.units import Budget, SkipUnit, Unit, is_oom, for_device

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
    """What earlier points of one batch size showed, to skip a point that cannot fit before trying it:
    the last prefill time, the state's size against context, and where memory ran out."""

    def __init__(self, device):
        self.last: dict[int, tuple[int, float]] = {}  # batch -> (context, seconds of one prefill)
        self.states: dict[int, list[tuple[int, int]]] = {}  # batch -> [(context, state bytes)]
        self.oom_at: dict[int, int] = {}  # batch -> shortest context that ran out of memory
        self.memory = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None

    def check(self, L: int, B: int, seconds: float | None, weights_bytes: int) -> None:
        if B in self.oom_at and L > self.oom_at[B]:
            raise SkipUnit(f"batch {B} ran out of memory at the shorter context {self.oom_at[B]}")
        if B in self.last and seconds is not None:
            L0, s0 = self.last[B]
            predicted = s0 * L / L0
            if L > L0 and predicted > seconds:
                raise SkipUnit(f"one prefill predicted to take {predicted:.0f} s (linear from {s0:.2f} s at {L0} "
                               f"tokens) > max_seconds_per_point={seconds:g}")
        points = self.states.get(B, [])
        if self.memory is not None and len(points) >= 2:
            (L1, s1), (L2, s2) = points[-2:]
            state = s2 + (L - L2) * (s2 - s1) / (L2 - L1)  # a KV cache grows linearly, a recurrent state not
            if weights_bytes + state > self.memory:
                raise SkipUnit(f"predicted out of memory: a state of {state / 2**30:.0f} GiB (linear in context "
                               f"from {L1} and {L2} tokens) and {weights_bytes / 2**30:.1f} GiB of weights exceed "
                               f"the device's {self.memory / 2**30:.0f} GiB", metric="oom")


def measure_prefill(model, ids, repeats: int, budget: Budget) -> tuple[list[dict], tuple]:
    """Prefill timings after one untimed warm-up (compilation, allocator, caches): at least one timed run,
    more while the prefill's share of the budget lasts. Also returns the (logits, state) of the last run
    for the decode measurement."""
    dev = model.device
    out: dict = {}

    def prefill():
        out.pop("result", None)  # free the last state first: peak memory is one prefill's
        out["result"] = model.prefill(ids, logits="last")

    _peak_reset(dev)
    prefill()
    _sync(dev)
    times = repeat_ms(prefill, dev, repeats, 0, budget=Budget(PREFILL_SHARE * budget.remaining()))
    B, T = ids.shape
    rows = timing_rows("prefill_ms", times)
    rows += [{**r, "metric": r["metric"].replace("prefill_ms", "time_to_first_token_ms")} for r in rows]
    median = rows[0]["value"]
    rows.append({"metric": "prefill_tokens_per_s", "value": B * T / median * 1e3, "n": len(times)})
    if dev.type == "cuda":
        rows.append({"metric": "prefill_peak_bytes", "value": _peak(dev), "n": len(times) + 1})
    return rows, out.pop("result")


def measure_decode(model, logits, state, steps: int, warmup: int, budget: Budget) -> list[dict]:
    dev = model.device
    state = model.prepare_decode(state, steps + max(warmup, 1))
    _peak_reset(dev)
    tok = logits.argmax(-1)

    def one_step():
        nonlocal tok, state
        out, state = model.step(tok, state)
        tok = out.argmax(-1)

    one_step()  # always one untimed step: a compiled step records its graph for this shape here
    times = repeat_ms(one_step, dev, steps, warmup - 1, budget=budget, min_repeats=3)
    B = tok.shape[0]
    rows = timing_rows("decode_ms_per_token", times)
    rows += [{"metric": "decode_tokens_per_s", "value": B / rows[0]["value"] * 1e3, "n": len(times)},
             {"metric": "state_bytes", "value": model.state_nbytes(state), "n": 1}]
    if dev.type == "cuda":
        rows.append({"metric": "decode_peak_bytes", "value": _peak(dev), "n": len(times)})
    return rows


def measure_point(model, L: int, B: int, task, trend: Trend, budget: Budget) -> list[dict]:
    trend.check(L, B, budget.seconds, model.weights_nbytes)
    g = torch.Generator().manual_seed(int(task.get("seed", 0)))
    ids = torch.randint(0, model.tokenizer.vocab_size, (B, L), generator=g).to(model.device)
    try:
        rows, (logits, state) = measure_prefill(model, ids, int(task.repeats), budget)
        prefill_path = model.prefill_config
        trend.last[B] = (L, next(r["value"] for r in rows if r["metric"] == "prefill_ms") / 1e3)
        rows += measure_decode(model, logits, state, int(task.decode_steps), int(task.warmup), budget)
        trend.states.setdefault(B, []).append((L, next(r["value"] for r in rows if r["metric"] == "state_bytes")))
    except Exception as e:
        if is_oom(e):
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
    trend = Trend(device)
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
