"""Figure 3: recall probe accuracy versus context length, versus each numeric probe parameter (pairs,
needle depth, ...) and versus the state or KV-cache bytes the model held, one figure per probe.

A probe's `variant` is a parameter string (`depth=0.5;order=question_first`). Numeric parameters with
several values become x axes of their own; other parameters with several values (order, kind) split the
figure into rows; every remaining combination is its own line, never averaged."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rwkvbench.plots import style

REQUIRED = ["model", "family", "task", "context_len", "metric", "value"]
# the scores drawn (evals/probes/scoring.py); the other rows (answer log-probs, context tokens, wall time,
# entries) are diagnostics that stay in the tables
SCORES = {"exact_match": "exact match", "token_accuracy": "token accuracy", "acc": "accuracy"}
PROBE_ORDER = ["copy", "phonebook", "mqar", "passkey"]
X_LABELS = {"context_len": "context length (tokens)", "state_bytes": "state / KV-cache bytes held"}


def _number(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _split_params(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Rows with one column per variant parameter; the numeric and the categorical parameters that vary."""
    params = pd.DataFrame([style.parse_variant(v) for v in rows.variant], index=rows.index)
    numeric, categorical = [], []
    for col in params.columns:
        values = params[col].dropna().unique()
        if len(values) < 2:
            continue
        nums = [_number(v) for v in values]
        (numeric if all(n is not None for n in nums) else categorical).append(col)
    rows = rows.copy()
    for col in params.columns:
        rows[f"p:{col}"] = params[col].map(_number) if col in numeric else params[col]
    return rows, numeric, categorical


def _with_state(scores: pd.DataFrame, state: pd.DataFrame) -> pd.DataFrame:
    """Score rows with the state bytes measured at their model, variant and context length."""
    keys = ["model", "task", "variant", "context_len"]
    s = state[keys + ["value"]].rename(columns={"value": "state_bytes"})
    s = s.drop_duplicates(keys, keep="last")
    merged = scores.merge(s, on=keys, how="left")
    if merged.state_bytes.isna().all():  # state rows without a variant: one per model and context
        s = state.drop_duplicates(["model", "task", "context_len"], keep="last")
        merged = scores.merge(s[["model", "task", "context_len", "value"]].rename(columns={"value": "state_bytes"}),
                              on=["model", "task", "context_len"], how="left")
    merged.index = scores.index
    return merged


def _panel(ax, rows: pd.DataFrame, x: str, x_col: str, split: list[str], colours, metric: str) -> None:
    """One line per model and per combination of the `split` columns, y = score, x = x_col."""
    data = rows.dropna(subset=[x_col])
    combos = sorted({tuple(r) for r in data[split].itertuples(index=False)}, key=_order) if split else [()]
    xs = []
    models = [m for m in style.model_order(rows) if (data.model == m).any()]
    for i, model in enumerate(models):
        m = data[data.model == model]
        fam = style.family(m.family.iloc[0])
        for k, combo in enumerate(combos):
            s = m
            for col, val in zip(split, combo):
                s = s[s[col].isna()] if pd.isna(val) else s[s[col] == val]
            if s.empty:
                continue
            s = s.sort_values(x_col)
            marker = fam.marker if len(combos) == 1 else style.MARKERS[k % len(style.MARKERS)]
            # earlier models drawn wider: a later one on the same points (both at 0) leaves both visible
            wider = len(models) - 1 - i
            ax.errorbar(s[x_col].astype(float), s.value, yerr=s.stderr.to_numpy(dtype=float), color=colours[model],
                        marker=marker, ms=5 + 1.5 * wider, lw=1.6 + wider, capsize=2,
                        linestyle=style.LINESTYLES[k % len(style.LINESTYLES)])
            xs += list(s[x_col].astype(float))
    if len(combos) > 1:  # say which line is which combination (colours are the models, in the figure legend)
        handles = [style.proxy(color="#555555", marker=style.MARKERS[k % len(style.MARKERS)], ms=5,
                               linestyle=style.LINESTYLES[k % len(style.LINESTYLES)]) for k in range(len(combos))]
        names = [", ".join(_param_text(col, v) for col, v in zip(split, c)) for c in combos]
        ax.legend(handles, names, fontsize=7, loc="best", framealpha=0.85)
    xs = [v for v in xs if np.isfinite(v)]
    positive = [v for v in xs if v > 0]
    if x in ("context_len", "state_bytes") or (positive and len(positive) == len(xs) and max(xs) / min(xs) >= 8):
        style.log_axis(ax, "x", xs, {"context_len": "tokens", "state_bytes": "bytes"}.get(x, "decimal"),
                       max_ticks=6 if x == "state_bytes" else 8)
    ax.set_xlabel(X_LABELS.get(x, x.removeprefix("p:")))
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel(SCORES.get(metric, metric))
    ax.grid(True, alpha=0.3)


def _order(combo: tuple) -> tuple:
    """Numbers in numeric order, before text."""
    return tuple((0, float(v), "") if _number(v) is not None and not pd.isna(v) else (1, 0.0, str(v)) for v in combo)


def _param_text(col: str, value) -> str:
    if col == "context_len":
        return f"{style.tokens(value)} tokens"
    v = value if not isinstance(value, float) else f"{value:g}"
    return f"{col.removeprefix('p:')}={v}"


def _figure(rows: pd.DataFrame, state: pd.DataFrame, status: pd.DataFrame, task: str) -> object:
    plt = style.pyplot()
    n_scores = len(rows)
    rows, numeric, categorical = _split_params(pd.concat([rows, status]))
    rows, status = rows.iloc[:n_scores], rows.iloc[n_scores:]
    has_state = not state.empty
    if has_state:
        rows = _with_state(rows, state)
        has_state = rows.state_bytes.notna().any()
    num_cols = [f"p:{c}" for c in numeric]
    xs = ["context_len"] + num_cols + (["state_bytes"] if has_state else [])
    metrics = [m for m in SCORES if (rows.metric == m).any()]
    cat_cols = [f"p:{c}" for c in categorical]
    facets = [(m, combo) for m in metrics for combo in
              (sorted({tuple(r) for r in rows.loc[rows.metric == m, cat_cols].itertuples(index=False)}, key=str)
               if cat_cols else [()])]
    fig, axes = plt.subplots(len(facets), len(xs), figsize=(4.4 * len(xs) + 0.4, 3.4 * len(facets) + 2.2),
                             squeeze=False)
    colours = style.model_colours(rows)
    for r, (metric, combo) in enumerate(facets):
        sel = rows[rows.metric == metric]
        for col, val in zip(cat_cols, combo):
            sel = sel[sel[col].isna()] if pd.isna(val) else sel[sel[col] == val]
        facet = ", ".join(_param_text(c, v) for c, v in zip(cat_cols, combo))
        for ax, x in zip(axes[r], xs):
            if x == "context_len" or x == "state_bytes":
                split = num_cols
            else:
                split = ["context_len"] + [c for c in num_cols if c != x]
            _panel(ax, sel, x, x, split, colours, metric)
            if x == "context_len":
                at = status
                for col, val in zip(cat_cols, combo):
                    at = at[at[col].isna()] if pd.isna(val) else at[at[col] == val]
                style.mark_status(ax, at, lambda model: colours.get(model, "#444444"))
            ax.set_title(" · ".join(p for p in (task, SCORES.get(metric, metric), facet) if p), fontsize=10.5)
    models = style.model_order(rows)
    first_family = rows.groupby("model").family.first()
    handles = [style.proxy(color=colours[m], marker=style.family(first_family[m]).marker, lw=1.6) for m in models]
    labels = [style.model_label(rows, m) for m in models]
    h, lab = style.status_handles(status)
    handles, labels = handles + h, labels + lab
    subtitle, warning = style.setup_line(rows, style.n_range(rows, "items per point"))
    subtitle += f"\n{style.ERRORBARS} (binomial)"
    titles = {"copy": "Copying text back", "phonebook": "Phone-book lookup", "mqar": "Associative recall (MQAR)",
              "passkey": "Passkey retrieval"}
    style.finish(fig, f"{titles.get(task, task)}: recall as the context grows", subtitle, warning, handles, labels,
                 ncol=2)
    return fig


def plot_recall(df: pd.DataFrame) -> dict:
    """{"recall_<probe>": figure} per probe task in the suite=recall rows, or {}."""
    rows = style.suite_rows(df, "recall", REQUIRED)
    if rows.empty:
        return {}
    figures = {}
    tasks = [t for t in PROBE_ORDER if (rows.task == t).any()] + sorted(set(rows.task.dropna()) - set(PROBE_ORDER))
    for task in tasks:
        t = rows[rows.task == task]
        state = t[t.metric == "state_bytes"]
        status = t[t.metric.isin(list(style.STATUS))]
        scores = t[t.metric.isin(list(SCORES))]
        if scores.empty:
            continue
        figures[f"recall_{task}"] = _figure(scores, state, status, task)
    return figures

