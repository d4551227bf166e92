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
        from rwkvbench.run import report

        report(Path(config.hydra.sweep.dir), sweep=True)  # every job's results under the sweep folder, merged
