"""Figure 1: accuracy (and LAMBADA perplexity) versus parameter count, one panel per task, RWKV against the
Transformer, error bars of one standard error, the chance level, and the published numbers (the RWKV
paper v1 and EleutherAI's Pythia evaluations) as hollow markers."""

from __future__ import annotations

import math
import re

import matplotlib.transforms as mtransforms
import numpy as np
import pandas as pd

from rwkvbench.plots import style
from rwkvbench.reference import PAPER, load_reference, task_info, task_order

REQUIRED = ["model", "family", "n_params", "task", "metric", "value"]
ACCURACY = ("acc", "acc_norm", "exact_match", "em")
PUBLISHED_NAME = {"rwkv": "RWKV-4", "transformer": "Pythia"}
PUBLISHED_MARKER = {PAPER: None, "EleutherAI Pythia evals": "D"}  # None: the family's own marker


def panels(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(task, metric) per panel: the metric the paper reports for the task (else acc), and perplexity
    where the task has one."""
    out = []
    for task in task_order(rows.task.unique()):
        metrics = set(rows.metric[rows.task == task])
        preferred = (task_info(task)["paper_metric"],) + ACCURACY
        acc = next((m for m in preferred if m in metrics), None)
        out += [(task, m) for m in (acc, "perplexity") if m in metrics]
    return out


def title(variants: list[str]) -> str:
    shots = [re.fullmatch(r"(\d+)-shot", v) for v in variants]
    if variants and all(shots):
        if variants == ["0-shot"]:
            return "Zero-shot accuracy versus model size"
        return f"Accuracy versus model size ({', '.join(variants)})"
    return "Accuracy versus model size"


def _published(ax, task: str, metric: str, families) -> list[float]:
    ref = load_reference()
    ref = ref[ref.config.notna() & (ref.task == task) & (ref.metric == metric) & ref.family.isin(families)]
    ys = []
    for (source, fam), r in ref.groupby(["source", "family"]):
        r = r.sort_values("n_params")
        f = style.family(fam)
        marker = PUBLISHED_MARKER.get(source) or f.marker
        ax.plot(r.n_params, r.value, ":", color=f.colour, lw=0.9, alpha=0.7)
        ax.errorbar(r.n_params, r.value, yerr=r.stderr.to_numpy(dtype=float), fmt=marker, ms=7, mfc="white",
                    mec=f.colour, mew=1.4, ecolor=f.colour, elinewidth=0.9, capsize=2, linestyle="none",
                    label=f"{PUBLISHED_NAME.get(fam, f.label)}, published: {source}")
        ys += list(r.value - r.stderr.fillna(0)) + list(r.value + r.stderr.fillna(0))
    return ys


def _chance(ax, chance: float | None) -> list[float]:
    if chance is None:
        return []
    ax.axhline(chance, color="#777777", lw=1, ls=(0, (3, 3)), zorder=0)
    trans = mtransforms.blended_transform_factory(ax.transAxes, ax.transData)
    ax.text(0.99, chance, "chance", transform=trans, ha="right", va="bottom", fontsize=8, color="#555555")
    return [chance]


def _panel(ax, rows: pd.DataFrame, task: str, metric: str, variants: list[str]) -> None:
    sub = rows[(rows.task == task) & (rows.metric == metric)]
    keys = style.series_keys(sub, ["family", "variant"], "n_params")
    ys, xs = [], list(sub.n_params)
    for key, s in sub.groupby(keys, dropna=False, sort=True):
        key = dict(zip(keys, key))
        s = s.sort_values("n_params")
        f = style.family(key["family"])
        shot = variants.index(key["variant"]) if key["variant"] in variants else 0
        ls = style.LINESTYLES[shot % len(style.LINESTYLES)]
        extra = [str(key[k]) for k in keys[2:]]
        label = ", ".join([f"{f.label}, this run"] + ([str(key["variant"])] if len(variants) > 1 else []) + extra)
        ax.errorbar(s.n_params, s.value, yerr=s.stderr.to_numpy(dtype=float), marker=f.marker, linestyle=ls,
                    color=f.colour, ms=7, lw=1.8, capsize=3, label=label, zorder=3)
        ys += list(s.value - s.stderr.fillna(0)) + list(s.value + s.stderr.fillna(0))
    ref_ys = _published(ax, task, metric, set(sub.family.dropna()))
    ref = load_reference()
    xs += list(ref.n_params[ref.config.notna() & (ref.task == task) & (ref.metric == metric)
                            & ref.family.isin(set(sub.family.dropna()))])
    info = task_info(task)
    style.log_axis(ax, "x", xs, "params")
    if metric == "perplexity":
        style.log_axis(ax, "y", ys + ref_ys, "decimal")
        ax.set_ylabel("perplexity (lower is better)")
    else:
        ys += ref_ys + _chance(ax, info["chance"])
        ys = [y for y in ys if np.isfinite(y)]
        lo, hi = min(ys), max(ys)
        pad = 0.1 * max(hi - lo, 0.05)
        ax.set_ylim(max(lo - pad, -0.03), min(hi + pad, 1.03))
        ax.set_ylabel(f"accuracy ({metric})")
    ax.set_xlabel("parameters")
    n = style.n_range(sub, "docs")
    ax.set_title(" · ".join(p for p in (info["label"], metric, n) if p), fontsize=10.5)
    ax.grid(True, alpha=0.3)


def plot_quality(df: pd.DataFrame) -> dict:
    """{"quality": figure} from suite=quality rows, or {} when there are none."""
    rows = style.suite_rows(df, "quality", REQUIRED)
    if rows.empty:
        return {}
    rows = rows[rows.metric.isin(ACCURACY + ("perplexity",))]
    which = panels(rows)
    if not which:
        return {}
    plt = style.pyplot()
    variants = sorted({str(v) for v in rows.variant.dropna()}, key=lambda v: (len(v), v))
    ncols = style.grid_columns(len(which))
    nrows = math.ceil(len(which) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols + 0.4, 3.5 * nrows + 2.2), squeeze=False)
    for ax, (task, metric) in zip(axes.flat, which):
        _panel(ax, rows, task, metric, variants)
    for ax in axes.flat[len(which):]:
        ax.set_visible(False)
    used = rows[rows.set_index(["task", "metric"]).index.isin(which)]
    subtitle, warning = style.setup_line(used, style.n_range(used, "documents per task"))
    subtitle += f"\n{style.ERRORBARS}  ·  hollow markers: published numbers (no error bar where none was published)"
    handles, labels = style.legend_entries(fig)
    style.finish(fig, title(variants), subtitle, warning, handles, labels, ncol=min(3, len(labels)))
    return {"quality": fig}
