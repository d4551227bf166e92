"""Full LAMBADA (lambada_openai, 5153 documents) wall time at the 1.5B shape, random weights, fp16, on one
GPU: our RWKV-4 and Pythia-1.4B shape through our lm-eval adapter, and the same Transformer through
lm-eval's own `hf` model. Then the prefix-reuse saving on HellaSwag-shaped requests (one context,
four endings).

    python benchmarks/lambada_wall_time.py DATA_DIR TOKENIZER_JSON [--profile] [--results DIR]

Each system first runs the whole task once untimed (first-use costs: CUDA and cuBLAS set-up for each
new batch shape, lm-eval's dataset cache), so the order in which they run does not favour the later
ones (the Transformer through lm-eval's hf shares the model, and its shapes, with ours); the first
run's time is printed too. The
forward pass alone is timed on one LAMBADA-sized batch (32 x 96 tokens); --profile prints RWKV's top
GPU ops for it. --results DIR appends tidy rows (suite=wall_time, task=lambada_openai, variant = the
path that scored: "rwkvbench adapter" or "lm-eval hf"; metrics seconds, first_run_seconds, acc,
perplexity, forward_ms) for `python -m rwkvbench.report DIR`.
"""

import argparse
import time

import lm_eval
import torch

from rwkvbench import load_model
from rwkvbench.evals.lm_eval_adapter import SequenceModelLM
from rwkvbench.evals.lm_eval_tasks import resolve_task


def timed(lm, task, limit=None):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = lm_eval.simple_evaluate(model=lm, tasks=[task], bootstrap_iters=0, log_samples=False, verbosity="ERROR",
                                  limit=limit)
    torch.cuda.synchronize()
    r = res["results"]["lambada_openai"]
    return time.perf_counter() - t0, r["acc,none"], r["perplexity,none"], res["n-samples"]["lambada_openai"]["effective"]


def forward_ms(model, profile=False):
    from rwkvbench.timing import median_ms

    ids = torch.randint(0, 50277, (32, 96), device="cuda")
    with torch.inference_mode():
        ms = median_ms(lambda: model.prefill(ids), "cuda", 20, 3)
        if profile:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as prof

            with prof(activities=[ProfilerActivity.CUDA]) as p:
                model.prefill(ids)
                torch.cuda.synchronize()
            print(p.key_averages().table(sort_by="cuda_time_total", row_limit=15), flush=True)
    return ms


class Stopwatch:
    """Cumulative synchronized time spent in obj.method (replaced on the instance)."""

    def __init__(self, obj, method):
        self.total, inner = 0.0, getattr(obj, method)

        def wrapped(*args, **kwargs):
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            torch.cuda.synchronize()
            self.total += time.perf_counter() - t0
            return out

        setattr(obj, method, wrapped)


def timed_twice(name, lm, task, forward_owner, forward_method) -> list[dict]:
    first = timed(lm, task)[0]
    scoring, forward = Stopwatch(lm, "_loglikelihood_tokens"), Stopwatch(forward_owner, forward_method)
    t, acc, ppl, n = timed(lm, task)
    print(f"{name}: {t:.1f} s (first run, untimed warm-up: {first:.1f} s), acc {acc:.4f}, ppl {ppl:.4g}, "
          f"n {n}; in _loglikelihood_tokens {scoring.total:.1f} s, of which forward {forward.total:.1f} s", flush=True)
    return [{"metric": "seconds", "value": t, "n": n}, {"metric": "first_run_seconds", "value": first, "n": n},
            {"metric": "acc", "value": acc, "n": n}, {"metric": "perplexity", "value": ppl, "n": n},
            {"metric": "scoring_seconds", "value": scoring.total, "n": n},
            {"metric": "forward_seconds", "value": forward.total, "n": n}]


class Rows:
    """Tidy rows (suite=wall_time) appended to a results folder, or nothing without --results."""

    def __init__(self, folder):
        from rwkvbench.results import COLUMNS, ResultsWriter

        self.writer = ResultsWriter(folder) if folder else None
        self.columns = COLUMNS

    def add(self, model, path: str, rows: list[dict]) -> None:
        if self.writer is None:
            return
        desc = model.describe()
        if "device_name" in self.columns and "device_name" not in desc:
            desc["device_name"] = torch.cuda.get_device_name()
        self.writer.append(rows, **desc, suite="wall_time", task="lambada_openai", variant=path, batch_size=32)


def main(data_dir, tokenizer_json, profile=False, results=None):
    from lm_eval.tasks import TaskManager
    from transformers import PreTrainedTokenizerFast

    task = resolve_task("lambada_openai", data_dir=data_dir)
    TaskManager(include_defaults=False)
    out = Rows(results)
    rwkv = load_model("rwkv4_1b5", init="random", dtype="fp16", device="cuda")
    lm = SequenceModelLM(rwkv, batch_size=32)
    rows = timed_twice("ours RWKV-4 1.5B", lm, task, rwkv, "prefill")
    fwd = forward_ms(rwkv, profile)
    print(f"  forward, 32 x 96 tokens: {fwd:.1f} ms", flush=True)
    out.add(rwkv, "rwkvbench adapter", rows + [{"metric": "forward_ms", "value": fwd, "n": 20}])
    ctx = " ".join(["A man is standing on a ladder next to a house and"] * 4)
    endings = [" he paints the wall blue.", " a dog barks at the mailman.", " she climbs down slowly.",
               " the ladder falls over."]
    from lm_eval.api.instance import Instance

    lm.stats = {"tokens_computed": 0, "prefix_tokens_saved": 0}
    lm.loglikelihood([Instance("loglikelihood", {}, (f"{ctx} {i}", e), 0) for i in range(100) for e in endings],
                     disable_tqdm=True)
    s = lm.stats
    print(f"HellaSwag-shaped (100 contexts x 4 endings): computed {s['tokens_computed']}, saved "
          f"{s['prefix_tokens_saved']} ({100 * s['prefix_tokens_saved'] / (s['tokens_computed'] + s['prefix_tokens_saved']):.1f}%)",
          flush=True)
    del rwkv, lm
    torch.cuda.empty_cache()
    neox = load_model("pythia_1b4", init="random", dtype="fp16", device="cuda")
    rows = timed_twice("ours adapter, Pythia-1.4B shape", SequenceModelLM(neox, batch_size=32), task, neox, "prefill")
    fwd = forward_ms(neox)
    print(f"  forward, 32 x 96 tokens: {fwd:.1f} ms", flush=True)
    out.add(neox, "rwkvbench adapter", rows + [{"metric": "forward_ms", "value": fwd, "n": 20}])
    from lm_eval.models.huggingface import HFLM

    tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer_json, eos_token="<|endoftext|>")
    hf = HFLM(pretrained=neox.model, tokenizer=tok, batch_size=32)
    out.add(neox, "lm-eval hf", timed_twice("lm-eval hf, same Transformer", hf, task, hf, "_model_call"))
    if out.writer is not None:
        print(f"tidy rows: {out.writer.path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("tokenizer_json")
    ap.add_argument("--profile", action="store_true", help="print RWKV's top GPU ops for one forward")
    ap.add_argument("--results", help="a results folder to append tidy rows (suite=wall_time) to")
    a = ap.parse_args()
    main(a.data_dir, a.tokenizer_json, a.profile, a.results)
