"""Figure 4: how much a task's accuracy moves with the prompt template, per task and model (a box over the
templates, one dot per template), and the paired difference question-first minus passage-first with its
confidence interval, per model and per family."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rwkvbench.plots import style
from rwkvbench.reference import task_info, task_order

REQUIRED = ["model", "family", "task", "variant", "metric", "value"]
SUMMARY = "summary"
ORDER_DIFF = "_qfirst_minus_pfirst"
ACCURACY = ("acc", "acc_norm", "exact_match", "em", "f1")


def _templates(rows: pd.DataFrame) -> pd.Series:
    """Rows of one template's score: not a summary ("summary", or "summary:<pair>" for a per-pair difference)."""
    return ~rows.variant.astype(str).str.startswith(SUMMARY)


def _template_metric(rows: pd.DataFrame, task: str) -> str | None:
    metrics = set(rows.metric[(rows.task == task) & _templates(rows)])
    return next((m for m in (task_info(task)["paper_metric"],) + ACCURACY if m in metrics), None)


def _spread_panel(ax, rows: pd.DataFrame, task: str, metric: str, models: list[str]) -> None:
    per = rows[(rows.task == task) & _templates(rows) & (rows.metric == metric)]
    present = [m for m in models if (per.model == m).any()]
    rng = np.random.default_rng(0)  # the same jitter on every redraw
    for i, model in enumerate(present):
        s = per[per.model == model].sort_values("value")
        f = style.family(s.family.iloc[0])
        box = ax.boxplot([s.value.to_numpy(dtype=float)], positions=[i], widths=0.55, whis=(0, 100), patch_artist=True,
                         showfliers=False, medianprops=dict(color=f.colour, lw=1.5))
        for patch in box["boxes"]:
            patch.set(facecolor=style.lighter(f.colour, 0.8), edgecolor=f.colour)
        for part in ("whiskers", "caps"):
            for line in box[part]:
                line.set(color=f.colour)
        jitter = rng.uniform(-0.14, 0.14, len(s))
        ax.scatter(i + jitter, s.value, color=f.colour, s=22, zorder=3, edgecolor="white", linewidth=0.5)
        # the worst template's name just below its value, the best's just above: apart even when equal
        for name, y, dy, va in ((s.variant.iloc[0], s.value.iloc[0], -1.5, "top"),
                                (s.variant.iloc[-1], s.value.iloc[-1], 1.5, "bottom")):
            ax.annotate(str(name), (i + 0.3, y), xytext=(0, dy), textcoords="offset points", fontsize=6.5,
                        color="#444444", va=va)
        ax.text(i, 0.01, f"{len(s)} templates", transform=ax.get_xaxis_transform(), ha="center", fontsize=7,
                color="#444444")
    chance = task_info(task)["chance"]
    values = list(per.value)
    if chance is not None:
        ax.axhline(chance, color="#777777", lw=1, ls=(0, (3, 3)), zorder=0)
        ax.text(len(present) - 0.5, chance, "chance", ha="right", va="bottom", fontsize=8, color="#555555")
        values.append(chance)
    lo, hi = min(values), max(values)
    pad = 0.12 * max(hi - lo, 0.05)
    ax.set_ylim(max(lo - 1.6 * pad, -0.03), min(hi + pad, 1.03))
    ax.set_xlim(-0.6, len(present) - 0.1)  # room on the right for the template names
    ax.set_xticks(range(len(present)), present, rotation=20, ha="right", fontsize=8.5)
    ax.set_xlabel("model")
    ax.set_ylabel(f"accuracy ({metric}), one dot per template")
    ax.set_title(f"{task_info(task)['label']} · spread across templates", fontsize=10.5)
    ax.grid(True, axis="y", alpha=0.3)


def _order_panel(ax, rows: pd.DataFrame, task: str, metric: str, models: list[str]) -> bool:
    """Question-first minus passage-first per model, then per family (models with no template rows)."""
    name = metric + ORDER_DIFF
    summ = rows[(rows.task == task) & (rows.variant == SUMMARY)]
    diff = summ[summ.metric == name]
    if diff.empty:
        ax.set_visible(False)
        return False
    lo = summ[summ.metric == name + "_ci_low"].set_index("model").value
    hi = summ[summ.metric == name + "_ci_high"].set_index("model").value
    with_templates = set(rows.model[(rows.task == task) & _templates(rows)])
    order = [m for m in models if m in set(diff.model) and m in with_templates]
    order += sorted(set(diff.model) - set(order))  # the family-level rows last
    for y, model in enumerate(order):
        r = diff[diff.model == model].iloc[0]
        f = style.family(r.family)
        family_level = model not in with_templates
        label = f"all {f.label} models" if family_level else model
        x = float(r.value)
        if model in lo.index and model in hi.index:
            ax.plot([lo[model], hi[model]], [y, y], color=f.colour, lw=2.2 if family_level else 1.6)
        ax.plot([x], [y], marker="D" if family_level else f.marker, ms=9 if family_level else 6, color=f.colour,
                mec="black" if family_level else f.colour)
        ax.text(-0.02, y, label, transform=ax.get_yaxis_transform(), ha="right", va="center", fontsize=8.5,
                fontweight="bold" if family_level else "normal")
    ax.axvline(0, color="#555555", lw=1)
    lo, hi = ax.get_xlim()
    pad = 0.05 * (hi - lo)
    ax.set_xlim(min(lo, -pad), max(hi, pad))  # zero (no difference) always in view
    ax.set_yticks([])
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.set_xlabel(f"{metric}: question first minus passage first")
    ax.set_title(f"{task_info(task)['label']} · does the order matter?", fontsize=10.5)
    ax.grid(True, axis="x", alpha=0.3)
    return True


def plot_prompt(df: pd.DataFrame) -> dict:
    """{"prompt": figure} from suite=prompt rows, or {}."""
    rows = style.suite_rows(df, "prompt", REQUIRED)
    if rows.empty:
        return {}
    tasks = [(t, m) for t in task_order(rows.task.unique()) if (m := _template_metric(rows, t))]
    if not tasks:
        return {}
    plt = style.pyplot()
    has_order = rows.metric.str.endswith(ORDER_DIFF).any()
    nrows = 2 if has_order else 1
    models = style.model_order(rows)
    fig, axes = plt.subplots(nrows, len(tasks), figsize=(5.2 * len(tasks) + 1.2, 4.2 * nrows + 2.2), squeeze=False,
                             gridspec_kw={"height_ratios": [1.4, 1][:nrows]})
    for c, (task, metric) in enumerate(tasks):
        _spread_panel(axes[0][c], rows, task, metric, models)
        if has_order:
            _order_panel(axes[1][c], rows, task, metric, models)
    per = rows[_templates(rows) & rows.metric.isin({m for _, m in tasks})]  # the scores drawn (not token counts)
    subtitle, warning = style.setup_line(per, style.n_range(per, "documents per template"))
    subtitle += "\nbox: middle half of the templates, whiskers: lowest to highest; the best and worst template named"
    if has_order:
        subtitle += ("\nbelow: paired difference on the same documents, bar: the run's bootstrap confidence interval; "
                     "right of 0: the question-first layout scores higher")
    families = sorted(set(per.family.dropna()))
    handles = [style.proxy(color=style.family(f).colour, marker=style.family(f).marker, linestyle="none", ms=7)
               for f in families]
    style.finish(fig, "Prompt sensitivity: accuracy across prompt templates", subtitle, warning, handles,
                 [style.family(f).label for f in families], ncol=len(families) or 1)
    return {"prompt": fig}
