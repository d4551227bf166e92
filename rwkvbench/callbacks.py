"""Hydra callbacks (registered in conf/config.yaml under hydra.callbacks).

SweepSummary: each job of a multirun writes its own results folder, table and plots; at the end of the
sweep this prints one table over every job and saves the comparison plots in the sweep folder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def read_sweep(folder) -> pd.DataFrame:
    """Every results file under a folder (one per job), merged. read_results(<folder>) takes this over
    once it merges nested results (issue 12)."""
    from rwkvbench.results import PARQUET, dedupe, read_results, tidy

    frames = [read_results(path) for path in sorted(Path(folder).glob(f"**/{PARQUET}"))]
    frames = [f for f in frames if len(f)]
    return dedupe(pd.concat(frames, ignore_index=True)) if frames else tidy([])


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from rwkvbench.plots import save_plots
        from rwkvbench.run import summary

        folder = Path(config.hydra.sweep.dir)
        df = read_sweep(folder)
        if df.empty:
            return
        print(f"[rwkvbench] sweep: {df.model.nunique()} model(s) over every job of {folder}")
        print(summary(df))
        for path in save_plots(df, folder):
            print(f"[rwkvbench] sweep plot: {path}")
