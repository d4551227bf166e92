"""Figure 2: prefill latency, decode latency per token, peak memory and state size versus context length,
one line per model, one row of panels per batch size; OOM and skipped points marked at the top of each
panel, each model's weights alone as a dotted reference line on the memory panel."""

from __future__ import annotations

import pandas as pd

from rwkvbench.plots import style

REQUIRED = ["model", "family", "context_len", "metric", "value"]
# (panel title, metrics drawn (solid, dashed), y label, log unit)
PANELS = [
    ("Prefill (whole context at once)", ["prefill_ms"], "prefill latency (ms)", "decimal"),
    ("Decode (one new token)", ["decode_ms_per_token"], "decode latency (ms / token)", "decimal"),
    ("Peak memory", ["prefill_peak_bytes", "decode_peak_bytes"], "peak GPU memory allocated", "bytes"),
    ("State carried between tokens", ["state_bytes"], "state / KV-cache size", "bytes"),
]
METRIC_NAMES = {"prefill_peak_bytes": "during prefill", "decode_peak_bytes": "during decode"}
STATUS_METRICS = list(style.STATUS)


def _series_rows(rows: pd.DataFrame, match: dict) -> pd.DataFrame:
    """All rows of one series (every metric), selected by its key columns."""
    for k, v in match.items():
        rows = rows[rows[k].isna()] if pd.isna(v) else rows[rows[k] == v]
    return rows


def _panel(ax, rows, status, colours, metrics, ylabel, unit, drew) -> None:
    ys, xs = [], list(rows.context_len) + list(status.context_len)
    for i, metric in enumerate(metrics):
        sub = rows[rows.metric == metric]
        keys = style.series_keys(sub, ["model"], "context_len")
        seen: dict[str, int] = {}  # series drawn so far per model
        order = {m: i for i, m in enumerate(style.model_order(rows))}
        groups = sorted(sub.groupby(keys, dropna=False, sort=True), key=lambda g: order[g[1].model.iloc[0]])
        for key, s in groups:
            match = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
            j = seen[match["model"]] = seen.get(match["model"], -1) + 1
            s = s.sort_values("context_len")
            colour = colours[match["model"]]
            fam = style.family(s.family.iloc[0])
            ls = style.LINESTYLES[i % len(style.LINESTYLES)]  # prefill / decode peak on the memory panel
            marker = fam.marker if j == 0 else style.MARKERS[j % len(style.MARKERS)]  # a split series
            label = style.model_label(rows, match["model"]) + "".join(f", {match[k]}" for k in keys[1:])
            band = style.percentile_band(_series_rows(rows, match), metric)
            if band is not None:
                ax.fill_between(band.index.astype(float), band.lo, band.hi, color=colour, alpha=0.2, lw=0)
                ys += list(band.lo) + list(band.hi)
                drew.add("band")
            yerr = s.stderr.to_numpy(dtype=float)
            if band is None and pd.notna(yerr).any():
                drew.add("errorbars")
                ys += list(s.value - s.stderr.fillna(0)) + list(s.value + s.stderr.fillna(0))
            else:
                yerr = None
            ax.errorbar(s.context_len.astype(float), s.value, yerr=yerr, marker=marker, ms=5, linestyle=ls,
                        color=colour, lw=1.8, capsize=2, label=label)
            ys += list(s.value)
    if "prefill_peak_bytes" in metrics:
        for model, w in rows[rows.metric == "weights_bytes"].groupby("model"):
            ax.axhline(w.value.max(), color=colours[model], ls=":", lw=1.4, zorder=1)
            ys.append(w.value.max())
            drew.add("weights")
    style.mark_status(ax, status, lambda model: colours.get(model, "#444444"))
    style.log_axis(ax, "x", xs, "tokens")
    style.log_axis(ax, "y", ys, unit)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def plot_efficiency(df: pd.DataFrame) -> dict:
    """{"efficiency": figure} from suite=efficiency rows, or {} when there are none."""
    rows = style.suite_rows(df, "efficiency", REQUIRED)
    if rows.empty:
        return {}
    panels = [p for p in PANELS if rows.metric.isin(p[1]).any()]
    if not panels:
        return {}
    plt = style.pyplot()
    batches = sorted(rows.batch_size.dropna().unique()) or [pd.NA]
    fig, axes = plt.subplots(len(batches), len(panels), figsize=(4.6 * len(panels) + 0.4, 3.8 * len(batches) + 2.4),
                             squeeze=False)
    colours = style.model_colours(rows)
    drew: set[str] = set()
    for r, batch in enumerate(batches):
        at = rows if pd.isna(batch) else rows[rows.batch_size == batch]
        status = at[at.metric.isin(STATUS_METRICS)]
        for ax, (name, metrics, ylabel, unit) in zip(axes[r], panels):
            _panel(ax, at, status, colours, metrics, ylabel, unit, drew)
            ax.set_title(name + ("" if pd.isna(batch) or len(batches) == 1 else f" · batch {int(batch)}"), fontsize=11)
    handles, labels = style.legend_entries(fig)
    memory = [m for m in ("prefill_peak_bytes", "decode_peak_bytes") if (rows.metric == m).any()]
    for i, m in enumerate(memory):
        handles.append(style.proxy(color="#444444", ls=style.LINESTYLES[i], lw=1.8))
        labels.append(f"memory panel: peak {METRIC_NAMES[m]}")
    if "weights" in drew:
        handles.append(style.proxy(color="#444444", ls=":", lw=1.4))
        labels.append("memory panel: the weights alone")
    h, lab = style.status_handles(rows)
    handles, labels = handles + h, labels + lab
    spread = []
    if "band" in drew:
        spread.append("line: median; shaded band: 10th–90th percentile of the repeats")
    if "errorbars" in drew:
        spread.append(style.ERRORBARS)
    prefill = style.n_range(rows[rows.metric == "prefill_ms"], "runs")
    decode = style.n_range(rows[rows.metric == "decode_ms_per_token"], "steps")
    n_text = "; ".join(p for p in (f"prefill {prefill}" if prefill else "", f"decode {decode}" if decode else "") if p)
    subtitle, _ = style.setup_line(rows, n_text, quality=False)
    if spread:
        subtitle += "\n" + "  ·  ".join(spread)
    style.finish(fig, "Speed and memory versus context length", subtitle, None, handles, labels, ncol=2)
    return {"efficiency": fig}
