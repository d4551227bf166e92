"""One run: resolve the models (the chosen one and its matched counterpart), run each task part on each,
append tidy rows, print a summary. Data flows one way: config -> model -> evaluator -> rows."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from rwkvbench.evals import get_evaluator
from rwkvbench.models.registry import load_model, model_config
from rwkvbench.results import ResultsWriter

SHARED_OVERRIDES = ("device", "dtype", "init", "tokenizer_path")


def model_configs(cfg: DictConfig) -> list[DictConfig]:
    overrides = {k: cfg.get(k) for k in SHARED_OVERRIDES}
    configs = [model_config(cfg.model, **overrides)]
    if cfg.compare and cfg.model.get("matched"):
        configs.append(model_config(cfg.model.matched, **overrides))
    return configs


def summary(df: pd.DataFrame) -> str:
    if df.empty:
        return "(no results)"
    keys = ["task", "metric", "context_len", "batch_size", "model"]
    table = df.drop_duplicates(keys, keep="last").set_index(keys).value.unstack("model").sort_index()
    with pd.option_context("display.width", 160, "display.max_rows", 200, "display.float_format", "{:.4g}".format):
        return table.to_string()


def run(cfg: DictConfig, out_dir: str | Path) -> ResultsWriter:
    from rwkvbench.kernels.dispatch import KERNEL_ENV
    from rwkvbench.validate import validate_run

    validate_run(cfg)  # every mistake found here, before any model loads
    os.environ[KERNEL_ENV] = cfg.get("wkv_kernel") or "auto"
    writer = ResultsWriter(out_dir)
    for mcfg in model_configs(cfg):
        model = load_model(mcfg)
        print(f"[rwkvbench] {model.name}: {model.family}, {model.n_params / 1e6:.2f}M params, "
              f"{str(model.dtype).removeprefix('torch.')} on {model.device}")
        for part in cfg.task.parts:
            get_evaluator(part.evaluator)(model, part, writer)
        del model
        gc.collect()
    return writer
