"""Latency and memory versus context length, through the SequenceModel interface.

Per context length: prefill latency and tokens/s (time to first token), per-token decode latency at that
context (median over many steps), state / KV-cache bytes, and on CUDA the peak allocated memory of
prefill and of decode. Every number is a median of repeats after warm-up, with the spread (standard
deviation) in `stderr`. An out-of-memory point is a row (metric "oom"), not a crash.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from rwkvbench.evals import register
from rwkvbench.timing import repeat_ms, summarize


def _peak_reset(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def measure_point(model, context_len: int, batch_size: int, decode_steps: int, repeats: int, warmup: int,
                  seed: int = 0) -> list[dict]:
    dev = model.device
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.tokenizer.vocab_size, (batch_size, context_len), generator=g).to(dev)
    rows = []

    _peak_reset(dev)
    prefill = repeat_ms(lambda: model.prefill(ids, logits="last"), dev, repeats, warmup)
    prefill_peak = _peak(dev)
    med, sd = summarize(prefill)
    rows += [
        {"metric": "prefill_ms", "value": med, "stderr": sd, "n": repeats},
        {"metric": "prefill_tokens_per_s", "value": batch_size * context_len / med * 1e3, "n": repeats},
        {"metric": "time_to_first_token_ms", "value": med, "stderr": sd, "n": repeats},
    ]

    logits, state = model.prefill(ids, logits="last")
    _peak_reset(dev)
    tok = logits.argmax(-1)
    step_times = []

    def one_step():
        nonlocal tok, state
        logits, state = model.step(tok, state)
        tok = logits.argmax(-1)

    step_times = repeat_ms(one_step, dev, decode_steps, warmup)
    med, sd = summarize(step_times)
    rows += [
        {"metric": "decode_ms_per_token", "value": med, "stderr": sd, "n": decode_steps},
        {"metric": "decode_tokens_per_s", "value": batch_size / med * 1e3, "n": decode_steps},
        {"metric": "state_bytes", "value": model.state_nbytes(state), "n": 1},
    ]
    if dev.type == "cuda":
        rows += [{"metric": "prefill_peak_bytes", "value": prefill_peak, "n": repeats},
                 {"metric": "decode_peak_bytes", "value": _peak(dev), "n": decode_steps}]
    return rows


@register("efficiency")
def run(model, task, writer) -> None:
    common = {**model.describe(), "suite": "efficiency", "task": task.name, "variant": "default"}
    points = [(L, B) for B in task.batch_sizes for L in task.context_lens]
    for L, B in tqdm(points, desc=f"efficiency {model.name}", leave=False):
        unit = {"context_len": L, "batch_size": B}
        if writer.has(model=model.name, suite="efficiency", task=task.name, **unit):
            continue
        try:
            rows = measure_point(model, L, B, task.decode_steps, task.repeats, task.warmup)
        except torch.OutOfMemoryError:
            rows = [{"metric": "oom", "value": 1.0, "n": 1}]
            _peak_reset(model.device)
        writer.append(rows, **common, **unit)
