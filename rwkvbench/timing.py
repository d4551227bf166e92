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


def repeat_ms(fn, device: torch.device, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    return [timed_ms(fn, device) for _ in range(repeats)]


def summarize(times: list[float]) -> tuple[float, float]:
    """Median and spread (standard deviation; 0 for a single sample)."""
    return statistics.median(times), (statistics.stdev(times) if len(times) > 1 else 0.0)


def median_ms(fn, device=None, repeats: int = 30, warmup: int = 5) -> float:
    """Median duration of fn in ms after warm-up (CUDA events on GPU)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return statistics.median(repeat_ms(fn, device, repeats, warmup))
