"""Hydra callbacks (registered in conf/config.yaml under hydra.callbacks).

SweepSummary: each job of a multirun writes its own results folder, table and plots; at the end of the
sweep this prints one table over every job and saves the comparison plots in the sweep folder.
"""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from rwkvbench.plots import save_plots
        from rwkvbench.results import read_results
        from rwkvbench.run import summary

        folder = Path(config.hydra.sweep.dir)
        df = read_results(folder)  # every job's results file under the sweep folder, merged
        if df.empty:
            return
        print(f"[rwkvbench] sweep: {df.model.nunique()} model(s) over every job of {folder}")
        print(summary(df))
        for path in save_plots(df, folder):
            print(f"[rwkvbench] sweep plot: {path}")
