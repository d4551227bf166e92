"""Training throughput of both families at every ladder size on one GPU: tokens/s, MFU, step time, peak
memory and the time of the first steps (the compile), for a few settings. One call of a few minutes:

    python benchmarks/train_throughput.py --out throughput.csv

prints a table and writes the CSV that `python -m rwkvbench.train mode=ladder ladder.throughput_csv=...`
reads for its run-time estimates. Uniform random tokens, or with --tokens FILE.npy (a 1-D array of
token ids, e.g. from `python benchmarks/train_throughput.py --make-tokens FILE.npy TEXT.jsonl.xz`) one
batch of consecutive real-text windows, as the trainer sees them (on an H200 a since-replaced cross-entropy
kernel ran RWKV-4's s7 step at 468K tokens/s on real text and 506K on random ids). The trainer's own
step (rwkvbench.train.trainer.train_step: bf16 autocast, fused head + cross-entropy, clipping, AdamW).

Each size and setting is timed in --rounds rounds that alternate between the families, each round a
freshly built and compiled model (`measure` says why); the step time is the median round. With
--results DIR the rows also go to DIR/results.parquet as tidy rows (suite=train_throughput), as
`benchmarks/publish_results.sh throughput` publishes them.

Settings, in order (the budget --budget-s cuts the list short, most important first):
  graphs     torch.compile of the block / each layer, mode="reduce-overhead": each compiled block / layer
             replayed as a CUDA graph; the loss chunk through our Triton kernel (the ladder's, conf/train)
  compiled   the same without CUDA graphs
  eager      no compile
  plain_ce   compiled, but the unfused head + torch cross-entropy over all logits (B x T x V)
  inductor_ce compiled, the fused head + cross-entropy's chunks compiled by inductor, not our Triton kernel
  micro_half compiled, the batch in two micro-batches (gradient accumulation)
  batch_x2   compiled, twice the sequences per step
MFU = tokens/s x FLOPs per token / peak, FLOPs per token = 6 (V D + 13 D^2 L) for RWKV-4 and that plus
6 L D T for GPT-NeoX (rwkvbench/train/families.py: the embedding is a lookup; attention causal), peak
989 TFLOP/s (H100/H200 SXM dense bf16; --peak-tflops).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

import numpy as np
import pandas as pd
import torch

from rwkvbench.config import load_option
from rwkvbench.models.base import device_name
from rwkvbench.results import ResultsWriter, versions
from rwkvbench.timing import timed_ms
from rwkvbench.train.families import get_family, padded_vocab
from rwkvbench.train.loss import (
    _chunk,
    chunk_fn_for,
    linear_cross_entropy,
    plain_cross_entropy,
)
from rwkvbench.train.optim import make_optimizer
from rwkvbench.train.trainer import train_step

SETTINGS = {
    "compiled": dict(compile=True, loss_fn=linear_cross_entropy, micro=1, batch=1),
    "graphs": dict(compile=True, mode="reduce-overhead", loss_fn=linear_cross_entropy, micro=1, batch=1),
    "eager": dict(compile=False, loss_fn=linear_cross_entropy, micro=1, batch=1),
    "plain_ce": dict(compile=True, loss_fn=plain_cross_entropy, micro=1, batch=1),
    "inductor_ce": dict(compile=True, loss_fn=linear_cross_entropy, micro=1, batch=1, chunk="inductor"),
    "micro_half": dict(compile=True, loss_fn=linear_cross_entropy, micro=2, batch=1),
    "batch_x2": dict(compile=True, loss_fn=linear_cross_entropy, micro=1, batch=2),
}
VOCAB = padded_vocab(50277)


def token_batch(tokens: np.ndarray | None, batch_size: int, context: int, device: torch.device) -> torch.Tensor:
    """(batch_size, context + 1) ids: consecutive windows of `tokens` (real text), else uniform random ids."""
    if tokens is None:
        return torch.randint(0, min(VOCAB, 50277), (batch_size, context + 1), device=device)
    need = batch_size * context + 1
    if len(tokens) < need:
        raise SystemExit(f"--tokens: {len(tokens):,} ids, a batch of {batch_size} x {context} needs {need:,}")
    starts = np.arange(batch_size) * context
    return torch.from_numpy(np.stack([tokens[s : s + context + 1] for s in starts]).astype(np.int64)).to(device)


def prepare(family: str, size_name: str, setting: str, device: torch.device, context: int, loss_chunk: int,
            batch_size: int | None = None, tokens: np.ndarray | None = None):
    """A fresh model of this family and size, its optimizer, a batch on the device (random ids, or windows
    of `tokens`) and the train_step keywords of `setting` (train_profile.py profiles the same step)."""
    s = SETTINGS[setting]
    size = load_option("train/size", size_name)
    recipe = load_option("train/family", family)
    model = get_family(family)(recipe, {"n_layer": size.n_layer, "n_embd": size.n_embd}, VOCAB, 0, device)
    if s["compile"] and device.type == "cuda":
        torch._dynamo.reset()  # as the trainer does: each size compiles its own static graph
        model.compile(s.get("mode"))
    inductor = s.get("chunk") == "inductor"
    chunk_fn = torch.compile(_chunk, dynamic=True) if inductor else chunk_fn_for(device, s["compile"])
    optimizer = make_optimizer(model, recipe, 1e-4, device)
    batch_size = batch_size or int(size.batch_size) * s["batch"]
    batch = token_batch(tokens, batch_size, context, device)
    step = dict(micro_batch_size=batch_size // s["micro"], amp_dtype=torch.bfloat16, loss_chunk=loss_chunk,
                l2wrap=float(recipe.get("l2wrap", 0.0)), grad_clip=1.0, chunk_fn=chunk_fn, loss_fn=s["loss_fn"])
    return size, model, optimizer, batch, step


def _round(family: str, size_name: str, setting: str, args) -> dict:
    """A fresh model of `family`: compiled, warmed up, then --steps steps timed; the model is gone after."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    size, model, optimizer, batch, step = prepare(family, size_name, setting, device, args.context, args.loss_chunk,
                                                  tokens=args.token_ids)
    warm_s = timed_ms(lambda: [train_step(model, optimizer, batch, device, **step) for _ in range(args.warmup)],
                      device) / 1e3
    step_ms = timed_ms(lambda: [train_step(model, optimizer, batch, device, **step) for _ in range(args.steps)],
                       device) / args.steps
    return {"step_ms": step_ms, "first_steps_s": max(0.0, warm_s - step_ms * args.warmup / 1e3),
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"),
            "kind": model.kind, "n_layer": size.n_layer, "n_embd": size.n_embd,
            "params_nonembedding": model.n_params_nonembedding(), "params_total": model.n_params(),
            "batch_size": len(batch), "micro_batch_size": step["micro_batch_size"],
            "flops_per_token": model.matmul_flops_per_token(args.context)}


def measure(families: list[str], size_name: str, setting: str, args) -> list[dict]:
    """Every family's step at one size and setting, in alternating rounds (A B, B A, A B, ...): each round
    builds the family's model afresh, compiles it, warms it up and times --steps steps, one model on the
    GPU at a time, as a training run has it. The step time is the median round; compile time and peak
    memory are the first round's (the first family's first round at a size also compiles what later
    rounds find in inductor's cache, and at the first size loads the process's kernels). Alternating puts
    drift of the GPU's clocks or the host over the call on both families alike. (Timed once each, one
    family after the other, the same step on an H200 differed by up to 11% between processes at s2, where
    the host sets the pace; with both models resident and their CUDA graphs in one tree, the host-bound
    s1-s2 steps ran 13% (GPT-NeoX) and 20% (RWKV-4) slower than alone.) A family that fails a round is
    not measured further; its row carries the note."""
    rounds: dict[str, list[dict]] = {family: [] for family in families}
    notes: dict[str, str] = {}
    for r in range(args.rounds):
        for family in families[:: 1 if r % 2 == 0 else -1]:
            if family in notes:
                continue
            try:
                rounds[family].append(_round(family, size_name, setting, args))
            except torch.OutOfMemoryError:
                notes[family] = f"oom in round {r + 1}"
            except Exception as e:  # noqa: BLE001  (one failing family must not lose the other's rounds)
                notes[family] = f"round {r + 1}: {type(e).__name__}: {str(e)[:200]}"
            torch._dynamo.reset()  # the round's compiled code and CUDA graph pool, before the next model
            gc.collect()  # the round's model and optimizer state
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    rows = [{"family": family, "size": size_name, "setting": setting, "note": note} for family, note in notes.items()]
    for family, measured in rounds.items():
        if family in notes or not measured:
            continue
        times = [m["step_ms"] for m in measured]
        step_ms = statistics.median(times)
        first = measured[0]
        tokens_per_s = first["batch_size"] * args.context / (step_ms / 1e3)
        rows.append({"family": family, "size": size_name, "setting": setting, "tokens": args.tokens or "random",
                     **{k: v for k, v in first.items() if k not in ("step_ms",)},
                     "context_len": args.context, "step_ms": step_ms, "step_ms_min": min(times),
                     "step_ms_max": max(times), "rounds": len(times), "tokens_per_s": tokens_per_s,
                     "mfu": tokens_per_s * first["flops_per_token"] / (args.peak_tflops * 1e12)})
    return rows


# metric -> what its n counts: the median, min and max are over rounds; compile time and peak memory
# are the first round's
TIDY_METRICS = {"tokens_per_s": "rounds", "step_ms": "rounds", "step_ms_min": "rounds", "step_ms_max": "rounds",
                "mfu": "rounds", "peak_mem_gib": "first", "first_steps_s": "first"}


def tidy_rows(row: dict, args) -> tuple[list[dict], dict]:
    """One measured (family, size, setting) as the results writer's rows (suite=train_throughput, one
    metric per row; an OOM as one `oom` row; none for a family that failed otherwise) and their common
    columns."""
    tokens = "real" if args.tokens else "random"
    common = {"model": f"{row['family']}_{row['size']}", "family": row.get("kind", row["family"]), "dtype": "bf16",
              "device": args.device, "device_name": device_name(torch.device(args.device)), "suite": "train_throughput",
              "task": "train_step", "variant": f"setting={row['setting']};tokens={tokens}",
              "context_len": args.context, "batch_size": row.get("batch_size")}
    if str(row.get("note", "")).startswith("oom"):
        return [{"metric": "oom", "value": 1.0}], common
    if "tokens_per_s" not in row:  # failed otherwise: its note is printed, no row to keep
        return [], common
    n = {"rounds": row.get("rounds"), "first": 1}
    common["n_params"] = row.get("params_total")
    return [{"metric": m, "value": float(row[m]), "n": n[of]} for m, of in TIDY_METRICS.items() if pd.notna(row.get(m))], \
        common


def make_tokens(out: str, text: str, limit: int = 4_000_000) -> None:
    from rwkvbench.models.tokenizer import load_tokenizer
    from rwkvbench.train.data import tokenize_file

    ids = tokenize_file(text, load_tokenizer("neox20b"))[:limit]
    np.save(out, ids.astype(np.uint16))
    print(f"wrote {out}: {len(ids):,} token ids of {text}")


def plan(args) -> list[tuple[str, str]]:
    """(size, setting), most important first: the ladder's setting (graphs) at every size, then the other
    whole-ladder settings, then the alternatives at the ends of the ladder. Each is measured for every
    family together."""
    jobs = [(s, name) for name in ("graphs", "compiled", "eager") for s in args.sizes]
    ends = list(dict.fromkeys([args.sizes[0], args.sizes[-1]]))
    others = ("plain_ce", "inductor_ce", "micro_half", "batch_x2")
    jobs += [(s, name) for name in others for s in ends]
    return jobs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=["rwkv4", "neox"])
    p.add_argument("--sizes", nargs="+", default=["s1", "s2", "s3", "s4", "s5", "s6", "s7"])
    p.add_argument("--settings", nargs="+", default=None, help="only these settings (default: all, in order)")
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--loss-chunk", type=int, default=8192)
    p.add_argument("--warmup", type=int, default=3, help="steps before timing (the compile happens here)")
    p.add_argument("--steps", type=int, default=10, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds per family, alternating between families (each builds and compiles the model)")
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--budget-s", type=float, default=400.0, help="stop starting new measurements after this")
    p.add_argument("--out", default="train_throughput.csv")
    p.add_argument("--results", default=None, help="a results folder to append tidy rows (suite=train_throughput) to")
    p.add_argument("--device", default="cuda", help="cpu: a smoke test of the script (tiny sizes), not a measurement")
    p.add_argument("--tokens", default=None, help="a .npy of token ids: real-text batches instead of random ids")
    p.add_argument("--make-tokens", nargs=2, metavar=("OUT.npy", "TEXT"), default=None,
                   help="write the GPT-NeoX token ids of a text or Pile-style file (first 4M) to OUT.npy and exit")
    args = p.parse_args()
    if args.make_tokens:
        make_tokens(*args.make_tokens)
        return
    args.token_ids = np.load(args.tokens) if args.tokens else None
    if args.device == "cuda":
        from rwkvbench.kernels.cuda_build import load_extension

        t0 = time.perf_counter()
        ok = load_extension() is not None
        print(f"CUDA extension {'loaded' if ok else 'UNAVAILABLE (RWKV runs the reference)'} in "
              f"{time.perf_counter() - t0:.1f} s; {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    writer = ResultsWriter(args.results) if args.results else None
    if writer is not None:  # runs.jsonl: the command line and package versions beside the rows
        writer.record_run(argv=sys.argv, cwd=os.getcwd(), config=vars(args) | {"token_ids": None}, versions=versions(),
                          device_name=device_name(torch.device(args.device)))
    rows, started = [], time.perf_counter()
    for size, setting in plan(args):
        if args.settings and setting not in args.settings:
            continue
        if time.perf_counter() - started > args.budget_s:
            print(f"budget of {args.budget_s:.0f} s spent: {size} {setting} and later ones not measured")
            break
        try:
            measured = measure(args.families, size, setting, args)
        except Exception as e:  # noqa: BLE001  (one failing setting must not lose the others' numbers)
            measured = [{"family": f, "size": size, "setting": setting, "note": f"{type(e).__name__}: {str(e)[:200]}"}
                        for f in args.families]
        gc.collect()  # the models and their optimizer state went out of scope with measure()
        if args.device == "cuda":
            torch.cuda.empty_cache()
        for row in measured:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
            tidy, common = tidy_rows(row, args)
            if writer is not None and tidy:
                writer.append(tidy, **common)
        rows += measured
        pd.DataFrame(rows).to_csv(args.out, index=False)
    df = pd.DataFrame(rows)
    cols = [c for c in ["family", "size", "setting", "tokens", "params_nonembedding", "batch_size", "micro_batch_size",
                        "tokens_per_s", "mfu", "step_ms", "step_ms_min", "step_ms_max", "first_steps_s", "peak_mem_gib",
                        "note"] if c in df]
    with pd.option_context("display.width", 200, "display.max_rows", 200, "display.float_format", "{:.4g}".format):
        print(df[cols].to_string(index=False))
    for setting, part in df.groupby("setting", sort=False) if "tokens_per_s" in df else []:
        by_size = part.pivot_table(index="size", columns="family", values="tokens_per_s")
        if {"rwkv4", "neox"} <= set(by_size.columns):
            by_size = by_size.assign(ratio=by_size.rwkv4 / by_size.neox)  # RWKV-4 / GPT-NeoX
        print(f"\n{setting}: tokens/s by size")
        print(by_size.to_string(float_format="{:.4g}".format))
    print(f"wrote {args.out}" + (f"; tidy rows: {writer.path}" if writer is not None else ""))


if __name__ == "__main__":
    main()
