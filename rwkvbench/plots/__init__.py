"""Comparison figures from tidy results, one function per suite (DataFrame -> {file stem: figure}):

    quality     accuracy / LAMBADA perplexity versus parameters, with the published numbers
    efficiency  prefill, decode, peak memory and state versus context length
    recall      probe accuracy versus context length, probe parameters and state bytes
    prompt      accuracy spread across prompt templates; question-first minus passage-first
    train       loss versus compute with the fitted power laws
    kernel      WKV kernel time versus sequence length against the bytes floor

A figure appears only when its rows exist. Rows are never averaged: two measurements that would share a
point become two lines. `save_plots` writes every applicable figure as PNG.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rwkvbench.plots.efficiency import plot_efficiency
from rwkvbench.plots.kernel import plot_kernel
from rwkvbench.plots.prompt import plot_prompt
from rwkvbench.plots.quality import plot_quality
from rwkvbench.plots.recall import plot_recall
from rwkvbench.plots.train import plot_train

FIGURES = [plot_quality, plot_efficiency, plot_recall, plot_prompt, plot_train, plot_kernel]


def make_figures(df: pd.DataFrame) -> dict:
    """{file stem: matplotlib figure} for every suite present in the rows."""
    figures = {}
    for plot in FIGURES:
        figures.update(plot(df))
    return figures


def save_plots(df: pd.DataFrame, out_dir, dpi: int = 110) -> list[Path]:
    """Every applicable figure as out_dir/<name>.png; the paths written."""
    from rwkvbench.plots.style import pyplot

    plt = pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in make_figures(df).items():
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        paths.append(path)
    return paths
