"""One run: resolve the models (the chosen one and its matched counterpart), run each task part's units
of work on each, append tidy rows, print a summary. Data flows one way: config -> model -> evaluator ->
units -> rows."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from rwkvbench import distributed
from rwkvbench.distributed import DistEnv
from rwkvbench.evals import get_evaluator, get_summarizer
from rwkvbench.models.registry import load_model, model_config
from rwkvbench.results import ResultsWriter, versions
from rwkvbench.units import STATUS_METRICS, for_device, run_units

SHARED_OVERRIDES = ("device", "dtype", "init", "tokenizer_path")


def model_configs(cfg: DictConfig, place: DistEnv = DistEnv()) -> list[DictConfig]:
    """The run's models; under torchrun each on this rank's own device (distributed.rank_device)."""
    overrides = {k: cfg.get(k) for k in SHARED_OVERRIDES}
    configs = [model_config(cfg.model, **overrides)]
    if cfg.compare and cfg.model.get("matched"):
        configs.append(model_config(cfg.model.matched, **overrides))
    for mcfg in configs:
        mcfg.device = distributed.rank_device(mcfg.get("device"), place)
    return configs


def report(folder, sweep: bool = False) -> None:
    """Print the summary table of everything under `folder` (a run's folder, or with `sweep` a multirun's,
    every job merged) and save its plots there."""
    from rwkvbench.plots import save_plots
    from rwkvbench.results import PARQUET, read_results

    df = read_results(folder)
    if sweep:
        if df.empty:
            return
        print(f"[rwkvbench] sweep: {df.model.nunique()} model(s) over every job of {folder}")
    print(summary(df))
    if not sweep:
        print(f"[rwkvbench] results: {folder}/{PARQUET} (and results.csv, runs.jsonl)")
    for path in save_plots(df, folder):
        print(f"[rwkvbench] {'sweep plot' if sweep else 'plot'}: {path}")


def summary(df: pd.DataFrame) -> str:
    """The measured numbers, a table per task (model per column), and below them any unit that did not
    run and why. Where each model ran its own single variant of a task (the code path an efficiency
    sweep records), the variants are listed under the table instead of splitting its rows."""
    if df.empty:
        return "(no results)"
    status = df[df.metric.isin(STATUS_METRICS)]
    values = df[~df.metric.isin(STATUS_METRICS) & ~df.metric.str.endswith(("_p10", "_p90"))]
    values = values.assign(variant=values.variant.fillna(""))
    out = []
    for task, rows in values.groupby("task", sort=True):
        per_model = rows.groupby("model").variant.nunique()
        own_paths = (per_model == 1).all() and rows.variant.nunique() > 1
        keys = ["metric", "context_len", "batch_size"] + ([] if own_paths else ["variant"])
        table = rows.drop_duplicates(keys + ["model"], keep="last").set_index(keys + ["model"]).value
        with pd.option_context("display.width", 200, "display.max_rows", 400, "display.max_colwidth", 60,
                               "display.float_format", "{:.4g}".format):
            out.append(f"== {task}\n" + table.unstack("model").sort_index().to_string())
        if own_paths:
            out += [f"  {m}: {v}" for m, v in rows.groupby("model").variant.first().items()]
    if len(status):
        out.append(f"{len(status)} unit(s) not measured:")
        for r in status.itertuples():
            # the variant too: a probe's units at one context differ by it (passkey: depth and order)
            where = ", ".join(f"{k}={getattr(r, k)}" for k in ("task", "context_len", "batch_size", "variant")
                              if not pd.isna(getattr(r, k)) and getattr(r, k) != "")
            out.append(f"  {r.model} {where}: {r.metric} ({r.note})")
    return "\n".join(out)


def record_provenance(writer: ResultsWriter, cfg: DictConfig) -> None:
    from rwkvbench.models.base import device_name
    from rwkvbench.models.registry import resolve_device

    writer.record_run(argv=sys.argv, cwd=os.getcwd(), config=OmegaConf.to_container(cfg, resolve=False),
                      versions=versions(), device_name=device_name(resolve_device(cfg.get("device"))))


def run(cfg: DictConfig, out_dir: str | Path) -> ResultsWriter:
    """Measure every unit of every task part on each model. Under torchrun (the process group joined here
    unless the caller already has) each rank measures its share of the units on its own device into the
    same folder (the writer is safe with concurrent writers); the summaries across models wait for every
    rank and run on rank 0."""
    from rwkvbench.kernels.dispatch import KERNEL_ENV
    from rwkvbench.validate import validate_run

    place = distributed.init()  # joins torchrun's process group (a no-op for one process)
    validate_run(cfg)  # every mistake found here, before any model loads
    os.environ[KERNEL_ENV] = cfg.get("wkv_kernel") or "auto"
    writer = ResultsWriter(out_dir)
    if place.is_main:
        record_provenance(writer, cfg)
    for mcfg in model_configs(cfg, place):
        model = load_model(mcfg)
        if place.world_size > 1:
            print(f"[rwkvbench] rank {place.rank}/{place.world_size}: {model.name} on {model.device}")
        if place.is_main:
            print(f"[rwkvbench] {model.name}: {model.family}, {model.n_params / 1e6:.2f}M params, "
                  f"{str(model.dtype).removeprefix('torch.')} on {model.describe()['device_name']} ({model.checkpoint})")
        for part in cfg.task.parts:
            units = get_evaluator(part.evaluator)(model, part)
            counts = run_units(model, units, writer, max_minutes=for_device(part.get("max_minutes"), model.device),
                               rank=place.rank, world_size=place.world_size, desc=f"{part.name} {model.name}")
            if counts["reused"]:
                print(f"[rwkvbench] {model.name} {part.name}: {counts['reused']} unit(s) already measured with the "
                      f"same settings in {writer.dir}, kept")
        del model
        gc.collect()
    distributed.barrier()  # every rank's rows are in the folder
    for part in cfg.task.parts:  # summaries across models, once every model is measured
        summarize = get_summarizer(part.evaluator)
        if summarize is not None and place.is_main:
            rows = summarize(writer.read(), writer.dir, part)
            if rows:
                writer.append(rows)
    distributed.barrier()  # the summaries' rows too, before rank 0 reports
    return writer
