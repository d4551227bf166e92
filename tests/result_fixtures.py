"""Tidy result rows of every suite, shaped as the evaluators write them (the results/units contract), for
the figure, report and reference tests. Numbers are made up but plausible; nothing here is published."""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ["run_id", "time", "git_rev", "model", "family", "n_params", "dtype", "device", "suite", "task",
           "variant", "context_len", "batch_size", "metric", "value", "stderr", "n", "device_name", "checkpoint",
           "fingerprint", "note", "step"]
GPU = "NVIDIA H200"
RANDOM = "random:seed=0"


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    df = df[COLUMNS]
    for col in ("n_params", "context_len", "batch_size", "n", "step"):
        df[col] = pd.to_numeric(df[col]).astype("Int64")
    for col in ("value", "stderr"):
        df[col] = pd.to_numeric(df[col]).astype("float64")
    return df


def _common(model, family, n_params, suite, checkpoint, **kw):
    return dict(run_id="r1", time="2026-11-23T10:00:00+00:00", git_rev="abc1234", model=model, family=family,
                n_params=n_params, dtype="float16", device="cuda", suite=suite, device_name=GPU,
                checkpoint=checkpoint, fingerprint="f" * 8, **kw)


PAIRS = [("rwkv4_169m", "rwkv", 169_342_464, "pythia_160m", "transformer", 162_322_944),
         ("rwkv4_430m", "rwkv", 430_397_440, "pythia_410m", "transformer", 405_334_016),
         ("rwkv4_1b5", "rwkv", 1_515_106_304, "pythia_1b4", "transformer", 1_414_647_808)]
QUALITY = {"lambada_openai": (("acc", 0.45, 5153), ("perplexity", 12.0, 5153)),
           "piqa": (("acc", 0.68, 1838), ("acc_norm", 0.69, 1838)),
           "hellaswag": (("acc", 0.38, 10042), ("acc_norm", 0.45, 10042)),
           "arc_challenge": (("acc", 0.24, 1172), ("acc_norm", 0.27, 1172))}


def quality_rows(checkpoint="/ckpt/{model}.pth@1a2b3c", variants=("0-shot",)) -> pd.DataFrame:
    rows = []
    for pair in PAIRS:
        for model, family, n_params in (pair[:3], pair[3:]):
            grow = np.log10(n_params / 1e8)
            for task, metrics in QUALITY.items():
                for variant in variants:
                    shots = int(variant.split("-")[0])
                    for metric, base, n in metrics:
                        if metric == "perplexity":
                            value, se = base / (1 + grow), 0.3
                        else:
                            value = min(0.95, base + 0.04 * grow + 0.01 * shots + (0.01 if family == "rwkv" else 0))
                            se = float(np.sqrt(value * (1 - value) / n))
                        rows.append({**_common(model, family, n_params, "quality",
                                               checkpoint.format(model=model), task=task, variant=variant,
                                               batch_size=16),
                                     "metric": metric, "value": value, "stderr": se, "n": n})
    return frame(rows)


def efficiency_rows() -> pd.DataFrame:
    rows = []
    contexts = [256, 1024, 4096, 16384, 65536, 262144, 1048576]
    for model, family, n_params, weights in (("rwkv4_1b5", "rwkv", 1_515_106_304, 3.03e9),
                                             ("pythia_1b4", "transformer", 1_414_647_808, 2.83e9)):
        for batch in (1, 8):
            for L in contexts:
                key = _common(model, family, n_params, "efficiency", RANDOM, task="efficiency",
                              variant="prefill=compiled;decode=graph", context_len=L, batch_size=batch)
                tokens = L * batch
                if family == "transformer" and tokens > (131072 if batch == 1 else 65536):
                    oom = tokens < 8 * 131072
                    rows.append({**key, "metric": "oom" if oom else "skipped", "value": 1.0, "n": 1,
                                 "note": "CUDA out of memory" if oom else "max_minutes spent"})
                    continue
                prefill = tokens * (5.5e-3 if family == "rwkv" else 4e-3 + tokens * 6e-8)
                decode = 1.4 * batch**0.3 if family == "rwkv" else 2.3 * batch**0.3 + tokens * 1.2e-5
                state = 24 * 5 * 2048 * 4 * batch if family == "rwkv" else 24 * 2 * 2048 * 2 * tokens
                peak = weights + (0.3e9 * tokens / 1048576 if family == "rwkv" else 3.5 * state)
                for metric, value, n in (("prefill_ms", prefill, 5), ("decode_ms_per_token", decode, 64)):
                    rows.append({**key, "metric": metric, "value": value, "n": n})
                    rows.append({**key, "metric": f"{metric}_p10", "value": value * 0.97, "n": n})
                    rows.append({**key, "metric": f"{metric}_p90", "value": value * 1.05, "n": n})
                rows += [{**key, "metric": "state_bytes", "value": state, "n": 1},
                         {**key, "metric": "prefill_peak_bytes", "value": peak, "n": 5},
                         {**key, "metric": "decode_peak_bytes", "value": weights + state * 1.1, "n": 64},
                         {**key, "metric": "weights_bytes", "value": weights, "n": 1}]
    return frame(rows)


SCORED = ("exact_match", "token_accuracy")  # the recall evaluator's scores (evals/probes/scoring.py)


def recall_rows(checkpoint=RANDOM) -> pd.DataFrame:
    rows = []
    probes = {"copy": (["kind=natural;order=question_last", "kind=random;order=question_last"],
                       SCORED),
              "phonebook": (["fewshot=2"], SCORED),
              "mqar": ([f"pairs={k}" for k in (4, 16, 64)], SCORED),
              "passkey": ([f"depth={d};order={o}" for o in ("question_first", "question_last")
                           for d in (0.0, 0.5, 1.0)], SCORED)}
    for model, family, n_params in (PAIRS[2][:3], PAIRS[2][3:]):
        for task, (variants, metrics) in probes.items():
            for variant in variants:
                for L in (256, 1024, 4096, 16384) + ((1048576,) if task == "passkey" else ()):
                    key = _common(model, family, n_params, "recall", checkpoint, task=task, variant=variant,
                                  context_len=L, batch_size=1)
                    if family == "transformer" and L > 65536:
                        rows.append({**key, "metric": "oom", "value": 1.0, "n": 1, "note": "CUDA out of memory"})
                        continue
                    decay = 1.0 if family == "transformer" else float(np.exp(-L / 3000))
                    for metric in metrics:
                        p = min(1.0, max(0.0, 0.98 * decay - (0.1 if "random" in variant else 0)))
                        n = 100
                        rows.append({**key, "metric": metric, "value": p, "stderr": float(np.sqrt(p * (1 - p) / n)),
                                     "n": n})
                    state = 983_040 if family == "rwkv" else 196_608 * L
                    rows.append({**key, "metric": "state_bytes", "value": state, "n": 1})
                    # what the recall evaluator writes beside the scores: not scores, not drawn as such
                    rows += [{**key, "metric": "answer_logprob", "value": -12.5, "stderr": 0.4, "n": 100},
                             {**key, "metric": "answer_logprob_per_token", "value": -6.2, "stderr": 0.2, "n": 100},
                             {**key, "metric": "context_tokens", "value": float(L), "n": 100},
                             {**key, "metric": "wall_seconds", "value": L / 5000, "n": 1}]
    return frame(rows)


def prompt_rows(checkpoint=RANDOM) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    templates = ["default", "instruction", "answer_prefix", "no_prefix", "newlines", "question_first",
                 "passage_first"]
    for model, family, n_params in (PAIRS[2][:3], PAIRS[2][3:]):
        for task, base in (("piqa", 0.62), ("boolq", 0.58)):
            spread = 0.06 if family == "rwkv" else 0.025
            accs = base + rng.normal(0, spread, len(templates))
            key = _common(model, family, n_params, "prompt", checkpoint, task=task, batch_size=16)
            for t, a in zip(templates, accs):
                rows.append({**key, "variant": t, "metric": "acc", "value": a,
                             "stderr": float(np.sqrt(a * (1 - a) / 1000)), "n": 1000})
            diff = accs[templates.index("question_first")] - accs[templates.index("passage_first")]
            summary = {"acc_mean": accs.mean(), "acc_std": accs.std(ddof=1), "acc_min": accs.min(),
                       "acc_max": accs.max(), "acc_range": accs.max() - accs.min(),
                       "acc_qfirst_minus_pfirst": diff, "acc_qfirst_minus_pfirst_ci_low": diff - 0.03,
                       "acc_qfirst_minus_pfirst_ci_high": diff + 0.03}
            for metric, value in summary.items():
                rows.append({**key, "variant": "summary", "metric": metric, "value": value, "n": len(templates)})
    for family, d in (("rwkv", 0.05), ("transformer", 0.01)):  # the family-level rows
        for task in ("piqa", "boolq"):
            key = _common(family, family, None, "prompt", checkpoint, task=task)
            for metric, value in (("acc_qfirst_minus_pfirst", d), ("acc_qfirst_minus_pfirst_ci_low", d - 0.02),
                                  ("acc_qfirst_minus_pfirst_ci_high", d + 0.02), ("acc_std", d)):
                rows.append({**key, "variant": "summary", "metric": metric, "value": value, "n": 1})
    return frame(rows)


LADDER = [(128, 4), (192, 6), (256, 8), (384, 8), (512, 10), (640, 12)]


def train_rows() -> pd.DataFrame:
    rows = []
    for family, prefix, b in (("rwkv", "rwkv4", 0.050), ("transformer", "neox", 0.048)):
        for d, n_layer in LADDER:
            n_params = 13 * d * d * n_layer + 2 * 50277 * d
            run = f"{prefix}_d{d}"
            for step in range(100, 1100, 100):
                tokens = step * 64 * 1024
                flops = 6 * n_params * tokens
                loss = 25 * flops ** -b * (1 + 0.5 / step**0.5)  # approaches the power law
                # as the trainer writes them: task = the corpus, variant = the learning rate (both families
                # share lr=0.002 here, so a run is a model and its variant)
                key = _common(run, family, n_params, "train", f"/ckpt/{run}@0f0f0f", task="corpus",
                              variant="lr=0.002", step=step, batch_size=64, context_len=1024)
                key["dtype"] = "bfloat16"
                for metric, value in (("loss", loss + 0.05), ("val_loss", loss), ("tokens", tokens),
                                      ("flops", flops), ("tokens_per_s", 4e5 / n_layer), ("mfu", 0.4)):
                    rows.append({**key, "metric": metric, "value": value, "n": 1})
    for family, prefix, b in (("rwkv", "rwkv4", 0.050), ("transformer", "neox", 0.048)):
        for variant, scale in (("compute=total", 1.0), ("compute=nonembedding", 1.1),
                               ("compute=total,irreducible", 3.0)):  # L = E + a C^-b: not a pure power law
            key = _common(prefix, family, None, "scaling", None, task="loss_vs_compute", variant=variant)
            key["dtype"] = "bfloat16"
            for metric, value in (("a", 25.0 * scale), ("b", b * scale), ("b_ci_low", b * scale - 0.004),
                                  ("b_ci_high", b * scale + 0.004), ("r2", 0.991), ("l_inf", 2.0)):
                rows.append({**key, "metric": metric, "value": value, "n": 6})
    return frame(rows)


def kernel_rows() -> pd.DataFrame:
    rows = []
    bandwidth = 4.0e12
    for B, C, Ts in ((1, 2048, (1024, 4096, 16384, 65536, 262144, 1048576)), (1, 768, (16384,)), (8, 2048, (4096,))):
        for T in Ts:
            floor = 3 * B * T * C * 4 / bandwidth * 1e3
            # the backward reads k, v and dy and writes dk and dv: 5 tensors to the forward's 3
            for model, task, ms, fl in (("rwkvbench", "wkv4_forward", floor * 1.25 + 0.01, floor),
                                        ("rwkvbench", "wkv4_backward", floor * 3.0 + 0.02, floor * 5 / 3),
                                        ("rwkv 0.8.32", "wkv4_forward", T * 2.6e-4 * max(1, B * C / 4096), floor)):
                key = _common(model, "rwkv", None, "kernel", None, task=task, variant=f"C={C};dtype=float32",
                              context_len=T, batch_size=B)
                key["dtype"] = "float32"
                if model != "rwkvbench" and B * T * C > 2**31 - 1:  # as compare_wkv_kernels.py: int32 indexing
                    rows.append({**key, "metric": "skipped", "value": 1.0, "n": 1, "note": "int32 indexing"})
                    continue
                rows += [{**key, "metric": "kernel_ms", "value": ms, "n": 30},
                         {**key, "metric": "kernel_ms_p10", "value": ms * 0.98, "n": 30},
                         {**key, "metric": "kernel_ms_p90", "value": ms * 1.03, "n": 30},
                         {**key, "metric": "floor_ms", "value": fl, "n": 1},
                         {**key, "metric": "pct_of_floor", "value": 100 * fl / ms, "n": 30}]
    return frame(rows)


def all_rows() -> pd.DataFrame:
    return pd.concat([quality_rows(), efficiency_rows(), recall_rows(), prompt_rows(), train_rows(), kernel_rows()],
                     ignore_index=True)
