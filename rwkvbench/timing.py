"""Timing device work honestly: warm-up, synchronisation (CUDA events on GPU), repeats, median."""

from __future__ import annotations

import statistics
import time

import torch


def timed_ms(fn, device: torch.device) -> float:
    """Run fn once and return its duration in ms, waiting for the device to finish."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def repeat_ms(fn, device: torch.device, repeats: int, warmup: int, budget=None, min_repeats: int = 1) -> list[float]:
    """Durations of `repeats` runs after `warmup` untimed ones. With a `budget` (units.Budget), stop once
    another run would not fit in what is left of it, after at least `min_repeats` timed runs."""
    for _ in range(warmup):
        if budget is not None and budget.expired():
            break
        fn()
    times: list[float] = []
    for _ in range(repeats):
        if budget is not None and len(times) >= min_repeats and budget.remaining() < times[-1] / 1e3:
            break
        times.append(timed_ms(fn, device))
    return times


def timing_rows(metric: str, times: list[float], note: str | None = None) -> list[dict]:
    """The median of repeated timings with its standard error (1.2533 s / sqrt(n), the normal-theory
    standard error of a median; null for one sample), and the spread as separate p10 / p90 rows."""
    n = len(times)
    se = 1.2533 * statistics.stdev(times) / n ** 0.5 if n > 1 else None
    rows = [{"metric": metric, "value": statistics.median(times), "stderr": se, "n": n, "note": note}]
    if n > 1:
        lo, hi = _quantiles(times)
        rows += [{"metric": f"{metric}_p10", "value": lo, "n": n}, {"metric": f"{metric}_p90", "value": hi, "n": n}]
    return rows


def _quantiles(times: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(times, n=10, method="inclusive")
    return q[0], q[-1]


def median_ms(fn, device=None, repeats: int = 30, warmup: int = 5) -> float:
    """Median duration of fn in ms after warm-up (CUDA events on GPU)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return statistics.median(repeat_ms(fn, device, repeats, warmup))
