"""Efficiency versus context length, each family at its best, through the SequenceModel interface.

Per (batch size, context length), one unit of work: prefill latency and tokens/s (= time to first token,
only the last logits computed), decode latency per token at that context (after `prepare_decode` puts
the state in the model's fastest form: graph-captured RWKV step, static KV cache and compiled forward for
Transformers), decode tokens/s, state / KV-cache bytes, and on CUDA the peak allocated memory of prefill
and of decode next to the weights' bytes. Times are medians with their standard error, the spread in
`_p10` / `_p90` rows, `n` the timed runs; `variant` records what actually ran.

Budgets hold: each point gets `max_seconds_per_point` for its warm-up, prefill repeats (60%) and decode
steps (the rest), doing fewer repeats when a run is slow; a point predicted to need more than that for a
single prefill (a power law through the last two points of its batch size, exponent at least 1), or
beyond `max_context_len` on this device, becomes a `skipped` row, and so does everything left when the
run's `max_minutes` is up; a point whose peak memory, extrapolated linearly from the last two points,
would not fit in the device's memory becomes an `oom` row whose note says it was predicted (over 85% of
it: a `skipped` row, too close to call). Points kept from an earlier run teach the same trend as points
measured now.
Those three keys may be given per device type ({cpu: ..., cuda: ...}).
"""

from __future__ import annotations

import math

import torch

from rwkvbench.evals import register
from rwkvbench.timing import repeat_ms, timed_ms, timing_rows
from rwkvbench.units import Budget, SkipUnit, Unit, is_oom, for_device

PREFILL_SHARE = 0.6  # of a point's budget; the decode steps get the rest
CHEAP_MS = 1000.0  # a prefill this fast gets at least MIN_CHEAP timed runs, whatever the warm-up cost
MIN_CHEAP = 3
MEMORY_SHARE = 0.85  # of the device's memory a point's predicted peak may use; past it, too close to call


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
    """What earlier points of one batch size showed (measured in this run or kept from an earlier one), to
    skip a point that cannot fit before trying it: prefill time and peak memory against context, and where
    memory ran out."""

    def __init__(self, device):
        self.times: dict[int, list[tuple[int, float]]] = {}  # batch -> [(context, seconds of one prefill)]
        self.peaks: dict[int, list[tuple[int, float]]] = {}  # batch -> [(context, peak bytes of the point)]
        self.oom_at: dict[int, int] = {}  # batch -> shortest context that ran out of memory
        self.memory = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None

    def learn(self, L: int, B: int, rows: list[dict]) -> None:
        """Take a measured point's rows (or a kept point's: an `oom` row marks where memory ran out)."""
        value = {r["metric"]: r["value"] for r in rows}
        if "oom" in value:
            self.ran_out(L, B)
        if value.get("prefill_ms") is not None:
            _insert(self.times.setdefault(B, []), L, value["prefill_ms"] / 1e3)
        peaks = [value[k] for k in ("prefill_peak_bytes", "decode_peak_bytes") if value.get(k) is not None]
        if peaks:
            _insert(self.peaks.setdefault(B, []), L, max(peaks))

    def ran_out(self, L: int, B: int) -> None:
        self.oom_at[B] = min(L, self.oom_at.get(B, L))

    def predicted_seconds(self, L: int, B: int) -> tuple[float, str] | None:
        """One prefill at L, a power law through the last two points below L (exponent at least 1: attention
        grows faster than linear once it dominates), or linear from one point."""
        points = [p for p in self.times.get(B, []) if p[0] < L]
        if not points:
            return None
        L2, s2 = points[-1]
        k = 1.0
        if len(points) >= 2:
            L1, s1 = points[-2]
            if s1 > 0 and s2 > 0:
                k = max(1.0, math.log(s2 / s1) / math.log(L2 / L1))
        return s2 * (L / L2) ** k, f"{s2:.2f} s at {L2} tokens, scaled as context^{k:.2f}"

    def check(self, L: int, B: int, budget: Budget) -> None:
        if B in self.oom_at and L > self.oom_at[B]:
            raise SkipUnit(f"batch {B} ran out of memory at the shorter context {self.oom_at[B]}")
        # memory first: a point that cannot fit is an oom row, whatever its time would have been
        points = [p for p in self.peaks.get(B, []) if p[0] < L]
        if self.memory is not None and len(points) >= 2:
            (L1, m1), (L2, m2) = points[-2:]
            peak = m2 + (L - L2) * (m2 - m1) / (L2 - L1)  # a KV cache and attention's activations grow linearly
            what = (f"a peak of {peak / 2**30:.0f} GiB (linear in context from {L1} and {L2} tokens) of the "
                    f"device's {self.memory / 2**30:.0f} GiB")
            if peak > self.memory:
                raise SkipUnit(f"predicted out of memory: {what}", metric="oom")
            if peak > MEMORY_SHARE * self.memory:
                # Measured on an H200: a point this close to the limit ran for minutes, past any budget, and a
                # GPU call cannot be interrupted. Not an oom: it might fit.
                raise SkipUnit(f"predicted near the memory limit: {what}, over {MEMORY_SHARE:.0%}")
        guess = self.predicted_seconds(L, B)
        if guess is not None:
            predicted, how = guess
            if budget.seconds is not None and predicted > budget.seconds:
                raise SkipUnit(f"one prefill predicted to take {predicted:.0f} s ({how}) > "
                               f"max_seconds_per_point={budget.seconds:g}")
            if 2 * predicted > budget.remaining():  # the warm-up and one timed run must fit
                raise SkipUnit(f"two prefills predicted to take {2 * predicted:.0f} s ({how}), more than the "
                               f"{max(budget.remaining(), 0):.0f} s left of the run's max_minutes")


def _insert(points: list[tuple[int, float]], L: int, value: float) -> None:
    """Keep (context, value) points sorted by context, one per context."""
    points[:] = sorted({**dict(points), L: value}.items())


def measure_prefill(model, ids, repeats: int, budget: Budget) -> tuple[list[dict], tuple]:
    """Prefill timings after one untimed warm-up (compilation, allocator, caches): at least one timed run,
    more while the prefill's share of the budget lasts, and at least MIN_CHEAP when a run is cheap (the
    first point's warm-up compiles and can spend the point's budget: one run after it is no median; an
    H200 sweep once published a 256-token prefill of n=1 at twice the 1K time). Also returns the
    (logits, state) of the last run for the decode measurement."""
    dev = model.device
    out: dict = {}

    def prefill():
        out.pop("result", None)  # free the last state first: peak memory is one prefill's
        out["result"] = model.prefill(ids, logits="last")

    _peak_reset(dev)
    prefill()
    _sync(dev)
    times = repeat_ms(prefill, dev, repeats, 0, budget=Budget(PREFILL_SHARE * budget.remaining()))
    while len(times) < min(MIN_CHEAP, repeats) and times[-1] < CHEAP_MS:
        times.append(timed_ms(prefill, dev))
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
    trend.check(L, B, budget)
    g = torch.Generator().manual_seed(int(task.get("seed", 0)))
    ids = torch.randint(0, model.tokenizer.vocab_size, (B, L), generator=g).to(model.device)
    try:
        rows, (logits, state) = measure_prefill(model, ids, int(task.repeats), budget)
        prefill_path = model.prefill_config
        trend.learn(L, B, rows)  # the prefill's time and peak, even if the decode runs out of memory
        rows += measure_decode(model, logits, state, int(task.decode_steps), int(task.warmup), budget)
        trend.learn(L, B, rows)  # the point's peak: the larger of prefill's and decode's
    except Exception as e:
        if is_oom(e):
            trend.ran_out(L, B)
        raise
    rows.append({"metric": "weights_bytes", "value": model.weights_nbytes, "n": 1})
    variant = f"prefill={prefill_path};decode={model.decode_config}"
    return [{**r, "variant": variant} for r in rows]


@register("efficiency", keys=("context_lens", "batch_sizes", "decode_steps", "repeats", "warmup", "seed",
                              "max_context_len", "max_seconds_per_point"))
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
                            measure=measure, params=params, label=f"B={B} T={L}", seconds=seconds,
                            kept=lambda rows, L=L, B=B: trend.learn(L, B, rows)))
    return out
