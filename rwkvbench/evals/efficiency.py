"""Efficiency versus context length, each family at its best, through the SequenceModel interface.

Per (batch size, context length): prefill latency and tokens/s (= time to first token, only the last
logits computed), decode latency per token at that context (median over many steps, after
`prepare_decode` puts the state in the model's fastest form: graph-captured RWKV step, static KV cache
and compiled forward for Transformers), decode tokens/s, state / KV-cache bytes, and on CUDA the peak
allocated memory of prefill and of decode next to the weights' bytes. Every time is a median of
repeats after warm-up, its standard deviation in `stderr`; `variant` records the configuration.
An out-of-memory point is a row (metric "oom"), not a crash, and every point is appended when done.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from rwkvbench.evals import register
from rwkvbench.timing import repeat_ms, summarize, timed_ms


def _peak_reset(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def _repeats_within(budget_s: float, first_s: float, repeats: int) -> int:
    """Fewer repeats where one run is slow (an attention prefill at very long context)."""
    return max(1, min(repeats, int(budget_s / max(first_s, 1e-9))))


def measure_prefill(model, ids, repeats: int, warmup: int, budget_s: float) -> list[dict]:
    dev = model.device
    _peak_reset(dev)
    prefill = lambda: model.prefill(ids, logits="last")  # noqa: E731
    n = _repeats_within(budget_s, timed_ms(prefill, dev) / 1e3, repeats)
    times = repeat_ms(prefill, dev, n, warmup if n == repeats else 0)
    med, sd = summarize(times)
    B, T = ids.shape
    rows = [{"metric": "prefill_ms", "value": med, "stderr": sd, "n": n},
            {"metric": "prefill_tokens_per_s", "value": B * T / med * 1e3, "n": n},
            {"metric": "time_to_first_token_ms", "value": med, "stderr": sd, "n": n}]
    if dev.type == "cuda":
        rows.append({"metric": "prefill_peak_bytes", "value": _peak(dev), "n": n})
    return rows


def measure_decode(model, ids, steps: int, warmup: int) -> list[dict]:
    dev = model.device
    logits, state = model.prefill(ids, logits="last")
    state = model.prepare_decode(state, steps + warmup)
    _peak_reset(dev)
    tok = logits.argmax(-1)

    def one_step():
        nonlocal tok, state
        out, state = model.step(tok, state)
        tok = out.argmax(-1)

    med, sd = summarize(repeat_ms(one_step, dev, steps, warmup))
    rows = [{"metric": "decode_ms_per_token", "value": med, "stderr": sd, "n": steps},
            {"metric": "decode_tokens_per_s", "value": ids.shape[0] / med * 1e3, "n": steps},
            {"metric": "state_bytes", "value": model.state_nbytes(state), "n": 1}]
    if dev.type == "cuda":
        rows.append({"metric": "decode_peak_bytes", "value": _peak(dev), "n": steps})
    return rows


def measure_point(model, context_len: int, batch_size: int, task, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.tokenizer.vocab_size, (batch_size, context_len), generator=g).to(model.device)
    rows = measure_prefill(model, ids, task.repeats, task.warmup, task.get("max_seconds_per_point", 30))
    rows += measure_decode(model, ids, task.decode_steps, task.warmup)
    rows.append({"metric": "weights_bytes", "value": model.weights_nbytes, "n": 1})
    return rows


@register("efficiency")
def run(model, task, writer) -> None:
    common = {**model.describe(), "suite": "efficiency", "task": task.name}
    points = [(L, B) for B in task.batch_sizes for L in task.context_lens]
    for L, B in tqdm(points, desc=f"efficiency {model.name}", leave=False):
        unit = {"context_len": L, "batch_size": B}
        if writer.has(model=model.name, suite="efficiency", task=task.name, **unit):
            continue
        try:
            rows = measure_point(model, L, B, task)
        except torch.OutOfMemoryError:
            rows = [{"metric": "oom", "value": 1.0, "n": 1}]
        _peak_reset(model.device)
        writer.append(rows, **common, **unit, variant=f"prefill={model.prefill_config};decode={model.decode_config}")
