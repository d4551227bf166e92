"""Figure 6: WKV kernel time versus sequence length T against the bytes floor (the time to read the
inputs and write the outputs once at the measured copy bandwidth), our kernel and the `rwkv` package's,
and the fraction of that floor each reaches. Rows come from benchmarks/compare_wkv_kernels.py --results."""

from __future__ import annotations

import pandas as pd

from rwkvbench.plots import style

REQUIRED = ["model", "task", "context_len", "metric", "value"]
OURS = "rwkvbench"
# task -> (name, line style, marker, floor colour): a panel of one T shows no line, so the markers tell
PASS = {"wkv4_forward": ("forward", "-", "o", "black"), "wkv4_backward": ("backward", ":", "s", "#888888")}
OTHERS = ["#333333", "#888888", "#555555"]  # implementations other than ours, in grey


def _pass(task: str) -> tuple[str, str, str, str]:
    return PASS.get(task, (task, "-.", "D", "black"))


def _colour(model: str, others: list[str]):
    return style.FAMILIES["rwkv"].colour if model == OURS else OTHERS[others.index(model) % len(OTHERS)]


def _group_panels(ax_time, ax_pct, rows: pd.DataFrame, others: list[str]) -> None:
    xs, ys = list(rows.context_len.astype(float)), []
    for (model, task), sel in rows.groupby(["model", "task"], sort=True):
        name, ls, marker, _ = _pass(task)
        colour = _colour(model, others)
        hollow = {} if model == OURS else {"mfc": "white"}
        t = sel[sel.metric == "kernel_ms"].sort_values("context_len")
        if t.empty:
            continue
        band = style.percentile_band(sel, "kernel_ms")
        if band is not None:
            ax_time.fill_between(band.index.astype(float), band.lo, band.hi, color=colour, alpha=0.2, lw=0)
        ax_time.plot(t.context_len.astype(float), t.value, ls=ls, marker=marker, ms=5, color=colour, lw=1.8,
                     label=f"{model}, {name}", **hollow)
        ys += list(t.value)
        p = sel[sel.metric == "pct_of_floor"].sort_values("context_len")
        if not p.empty:
            ax_pct.plot(p.context_len.astype(float), p.value, ls=ls, marker=marker, ms=5, color=colour, lw=1.8,
                        label=f"{model}, {name}", **hollow)
    for task, sel in rows[rows.metric == "floor_ms"].groupby("task"):
        f = sel.drop_duplicates("context_len").sort_values("context_len")
        name, _, _, floor_colour = _pass(task)
        ax_time.plot(f.context_len.astype(float), f.value, color=floor_colour, lw=1.1,
                     ls="-" if name == "forward" else "--", marker="_", ms=16, label=f"bytes floor, {name}")
        ys += list(f.value)
    style.mark_status(ax_time, rows[rows.metric.isin(list(style.STATUS))], lambda model: _colour(model, others))
    for ax in (ax_time, ax_pct):
        style.log_axis(ax, "x", xs, "tokens")
        ax.set_xlabel("sequence length T (tokens)")
        ax.grid(True, alpha=0.3)
    style.log_axis(ax_time, "y", ys, "decimal")
    ax_time.set_ylabel("kernel time (ms)")
    ax_pct.axhline(100, color="black", lw=1.1)
    ax_pct.set_ylim(0, 105)
    ax_pct.set_ylabel("% of the bytes floor (100 = at the floor)")


def plot_kernel(df: pd.DataFrame) -> dict:
    """{"kernel": figure} from suite=kernel rows, or {}."""
    rows = style.suite_rows(df, "kernel", REQUIRED)
    if rows.empty:
        return {}
    plt = style.pyplot()
    others = sorted(set(rows.model.dropna()) - {OURS})
    groups = list(rows.groupby(["batch_size", "variant"], dropna=False, sort=True))
    groups.sort(key=lambda g: -g[1].context_len.nunique())  # the T sweep first
    widths = [2 if g[1].context_len.nunique() > 2 else 1 for g in groups]  # a single T needs little room
    fig, axes = plt.subplots(2, len(groups), figsize=(3.4 * sum(widths) + 1.0, 8.6), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for c, ((batch, variant), sel) in enumerate(groups):
        _group_panels(axes[0][c], axes[1][c], sel, others)
        params = [f"{k}={v}" for k, v in style.parse_variant(variant).items() if k != "dtype"]  # dtype: in the subtitle
        shape = ", ".join(([f"B={int(batch)}"] if pd.notna(batch) else []) + params)
        axes[0][c].set_title(f"time · {shape}", fontsize=10)
        axes[1][c].set_title(f"fraction of the floor · {shape}", fontsize=10)
    handles, labels = style.legend_entries(fig)
    extra = style.status_handles(rows)
    handles, labels = handles + extra[0], labels + extra[1]
    subtitle, _ = style.setup_line(rows.assign(checkpoint=pd.NA), style.n_range(rows[rows.metric == "kernel_ms"],
                                                                                 "timed calls per point"))
    subtitle = subtitle.replace("  ·  weights not recorded", "")
    subtitle += ("\nbytes floor: forward reads k, v and writes y once, backward reads k, v, dy and writes dk, dv, "
                 "at the measured copy bandwidth  ·  line: median, band: 10th–90th percentile")
    style.finish(fig, "WKV kernel: time versus sequence length against the memory-traffic floor", subtitle, None,
                 handles, labels, ncol=3)
    return {"kernel": fig}
