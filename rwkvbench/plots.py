"""Comparison plots from tidy results: efficiency versus context (one line per model) and quality per
task (one bar per model). Written beside results.parquet at the end of a run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

EFFICIENCY_PANELS = [("prefill_ms", "prefill (ms)"), ("decode_ms_per_token", "decode (ms / token)"),
                     ("state_bytes", "state / KV cache (bytes)")]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_efficiency(df: pd.DataFrame, path: Path) -> Path | None:
    """Log-log panels versus context length at the smallest batch size measured."""
    eff = df[(df.suite == "efficiency") & df.metric.isin([m for m, _ in EFFICIENCY_PANELS])]
    if eff.empty:
        return None
    eff = eff[eff.batch_size == eff.batch_size.min()]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(EFFICIENCY_PANELS), figsize=(5 * len(EFFICIENCY_PANELS), 4))
    for ax, (metric, label) in zip(axes, EFFICIENCY_PANELS):
        for model, rows in eff[eff.metric == metric].groupby("model"):
            rows = rows.sort_values("context_len")
            ax.errorbar(rows.context_len, rows.value, yerr=rows.stderr.fillna(0), marker="o", capsize=2, label=model)
        ax.set(xscale="log", yscale="log", xlabel="context length (tokens)", title=label)
        ax.grid(True, which="both", alpha=0.3)
        contexts = sorted(int(c) for c in eff.context_len.dropna().unique())
        ax.set_xticks(contexts, [f"{c // 1024}K" if c >= 1024 and c % 1024 == 0 else str(c) for c in contexts])
        ax.xaxis.set_minor_locator(plt.NullLocator())
    axes[0].legend()
    fig.suptitle(f"batch size {int(eff.batch_size.min())}, {', '.join(sorted(eff.device.dropna().unique()))}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_quality(df: pd.DataFrame, path: Path) -> Path | None:
    """acc (with stderr) per task, one bar per model."""
    acc = df[(df.suite == "quality") & (df.metric == "acc")]
    if acc.empty:
        return None
    plt = _pyplot()
    table = acc.pivot_table(index="task", columns="model", values="value")
    err = acc.pivot_table(index="task", columns="model", values="stderr").reindex_like(table)
    ax = table.plot.bar(yerr=err.fillna(0), capsize=2, figsize=(max(6, 1.2 * len(table)), 4), rot=30)
    ax.set(ylabel="accuracy", title="zero-shot accuracy")
    ax.grid(True, axis="y", alpha=0.3)
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=120)
    plt.close(ax.figure)
    return path


def save_plots(df: pd.DataFrame, out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    made = [plot_efficiency(df, out_dir / "efficiency.png"), plot_quality(df, out_dir / "quality.png")]
    return [p for p in made if p is not None]
