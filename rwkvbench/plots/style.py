"""What every figure shares: the family colours, readable log axes (1K / 16K / 1M tokens, KiB / MiB / GiB,
0.5 / 1 / 2 ms), the subtitle that states the setup, OOM / skipped markers, and the checks on the input
rows (a missing column is one UserError naming it; rows are never averaged together)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rwkvbench.errors import UserError


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---- colours: one hue per family everywhere; darker = larger model within a family --------------------
@dataclass(frozen=True)
class Family:
    label: str
    colour: str
    marker: str


# Okabe-Ito vermillion and blue: distinct for colour-blind readers and in greyscale.
FAMILIES = {"rwkv": Family("RWKV", "#D55E00", "o"), "transformer": Family("Transformer", "#0072B2", "s")}
OTHER = Family("other", "#555555", "^")
ERRORBARS = "error bars: ± 1 standard error"
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def family(name) -> Family:
    return FAMILIES.get(str(name), OTHER if pd.isna(name) else Family(str(name), OTHER.colour, OTHER.marker))


def lighter(colour: str, white: float) -> tuple:
    from matplotlib.colors import to_rgb

    return tuple(c + (1 - c) * white for c in to_rgb(colour))


def model_colours(rows: pd.DataFrame, key: str = "model") -> dict[str, tuple]:
    """model (or another `key`) -> colour: its family's hue, lighter for smaller models of that family."""
    sizes = rows.groupby(key, dropna=False).agg(family=("family", "first"), n_params=("n_params", "max"))
    out = {}
    for fam, members in sizes.groupby("family", dropna=False):
        ordered = members.sort_values("n_params", na_position="first").index.tolist()
        for i, model in enumerate(ordered):
            white = 0.0 if len(ordered) == 1 else 0.6 * (len(ordered) - 1 - i) / (len(ordered) - 1)
            out[model] = lighter(family(fam).colour, white)
    return out


def model_order(rows: pd.DataFrame, key: str = "model") -> list:
    """Models (or another `key`) by family (RWKV first, as in every legend) and then by size."""
    sizes = rows.groupby(key, dropna=False).agg(family=("family", "first"), n_params=("n_params", "max"))
    rank = {name: i for i, name in enumerate(FAMILIES)}
    sizes["rank"] = [rank.get(str(f), len(rank)) for f in sizes.family]
    return sizes.sort_values(["rank", "n_params"], na_position="last").index.tolist()


def model_label(rows: pd.DataFrame, model: str) -> str:
    r = rows[rows.model == model].iloc[0]
    size = f", {si(float(r.n_params))} params" if pd.notna(r.n_params) else ""
    return f"{model} ({family(r.family).label}{size})"


def grid_columns(panels: int, most: int = 4) -> int:
    """Columns for a grid of panels: all in one row up to `most`, else `most` or one fewer, whichever leaves
    fewer empty slots."""
    if panels <= most:
        return panels
    return min(range(most, most - 2, -1), key=lambda c: -(-panels // c) * c - panels)


# ---- input checks ---------------------------------------------------------------------------------------
OPTIONAL = ["variant", "context_len", "batch_size", "stderr", "n", "dtype", "device", "device_name", "checkpoint",
            "note", "step", "n_params", "family"]


def suite_rows(df: pd.DataFrame, suite: str, required: list[str]) -> pd.DataFrame:
    """The rows of one suite, with every optional column present (NA where the results lack it).
    A required column missing from results that have this suite is one UserError naming it."""
    for col in ("suite", "metric", "value"):
        if col not in df.columns:
            raise UserError(f"results have no column {col!r} (found: {', '.join(map(str, df.columns))}); "
                            f"expected tidy rows from rwkvbench.results")
    rows = df[df.suite == suite]
    if rows.empty:
        return rows
    missing = [c for c in required if c not in rows.columns]
    if missing:
        raise UserError(f"{suite} rows have no column {missing[0]!r}, which the {suite} figure needs "
                        f"(required: {', '.join(required)})")
    rows = rows.copy()
    for col in OPTIONAL:
        if col not in rows.columns:
            rows[col] = pd.NA
    rows["value"] = pd.to_numeric(rows.value, errors="coerce").astype(float)
    rows["stderr"] = pd.to_numeric(rows.stderr, errors="coerce").astype(float)
    return rows


def parse_variant(variant) -> dict[str, str]:
    """'depth=0.5;order=question_first' -> {'depth': '0.5', 'order': 'question_first'}."""
    if pd.isna(variant) or not str(variant).strip():
        return {}
    out = {}
    for part in str(variant).split(";"):
        key, sep, value = part.partition("=")
        out[key.strip()] = value.strip() if sep else ""
    return out


def series_keys(rows: pd.DataFrame, base: list[str], x: str) -> list[str]:
    """The columns that split rows into lines: `base`, plus variant / checkpoint / dtype when `base` alone
    would put two rows at one x (never average two measurements into one point)."""
    keys = list(base)
    for extra in ("variant", "checkpoint", "dtype", "device_name", "run_id"):
        if not rows.duplicated(keys + [x, "metric"]).any():
            break
        if extra in rows.columns and extra not in keys:
            keys.append(extra)
    return keys


# ---- readable log axes ------------------------------------------------------------------------------------
def tokens(v: float) -> str:
    v = float(v)
    for scale, unit in ((2**30, "G"), (2**20, "M"), (2**10, "K")):
        if v >= scale:
            return f"{v / scale:g}{unit}"
    return f"{v:g}"


def binary_bytes(v: float) -> str:
    v = float(v)
    for power, unit in ((4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if v >= 1024**power:
            return f"{v / 1024**power:.3g} {unit}"
    return f"{v:.3g} B"


def si(v: float) -> str:
    """169M, 1.5B: decimal SI as model sizes are written."""
    v = float(v)
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.3g}"


def plain(v: float, commas_below: float = 1e5) -> str:
    """0.5, 2, 150, 10,000, 1e-5, 3e16: digits with thousands separators up to `commas_below`."""
    v = float(v)
    if v == 0 or 1e-3 <= abs(v) < 1e4:
        return f"{v:g}"
    if 1e4 <= abs(v) < commas_below:
        return f"{v:,.0f}"
    mantissa, exponent = f"{v:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _decimal_candidates(lo, hi):
    e0, e1 = math.floor(math.log10(lo)) - 3, math.ceil(math.log10(hi)) + 3  # room for every 3rd decade
    for subs, every in (((1, 1.5, 2, 3, 5, 7), 1), ((1, 2, 5), 1), ((1, 3), 1), ((1,), 1), ((1,), 2), ((1,), 3)):
        yield sorted(s * 10.0**e for e in range(e0, e1 + 1) if e % every == 0 for s in subs)


def _binary_candidates(lo, hi):
    k0, k1 = math.floor(math.log2(lo)) - 10, math.ceil(math.log2(hi)) + 10  # room for every 10th power
    for step in (1, 2, 3, 5, 10):
        yield [2.0**k for k in range(k0, k1 + 1) if k % step == 0]


# unit -> (tick candidates, label formatter)
LOG_UNITS = {"tokens": (_binary_candidates, tokens), "bytes": (_binary_candidates, binary_bytes),
             "decimal": (_decimal_candidates, plain), "params": (_decimal_candidates, si),
             "flops": (_decimal_candidates, plain)}


def log_ticks(lo: float, hi: float, unit: str, max_ticks: int = 8) -> list[float]:
    """The densest tick set whose ticks enclose [lo, hi] (one labelled tick at or beyond each end, so no point
    lies above the last label) with at most max_ticks ticks."""
    candidates, _ = LOG_UNITS[unit]
    best = None
    for cand in candidates(lo, hi):
        below = [t for t in cand if t <= lo * (1 + 1e-9)]
        above = [t for t in cand if t >= hi * (1 - 1e-9)]
        if not below or not above:
            continue
        a, b = below[-1], above[0]
        if a == b:  # a single value sitting on a tick: show its neighbours too
            i = cand.index(a)
            a, b = cand[max(i - 1, 0)], cand[min(i + 1, len(cand) - 1)]
        ticks = [t for t in cand if a <= t <= b]
        best = ticks
        if len(ticks) <= max_ticks:
            return ticks
    return best or [lo, hi]


def log_axis(ax, axis: str, values, unit: str, max_ticks: int = 8) -> None:
    """A log axis (x or y) over `values` with labelled ticks in `unit` at both ends and minor ticks unlabelled."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    vals = [float(v) for v in values if pd.notna(v) and np.isfinite(float(v)) and float(v) > 0]
    getattr(ax, f"set_{axis}scale")("log")
    if not vals:
        return
    ticks = log_ticks(min(vals), max(vals), unit, max_ticks)
    _, fmt = LOG_UNITS[unit]
    if unit == "decimal" and ticks[-1] < 1e7:  # one style per axis: 100,000 ms, not 1e5 next to 10,000
        fmt = lambda v: plain(v, commas_below=1e7)  # noqa: E731
    pad = (ticks[-1] / ticks[0]) ** 0.04 if ticks[-1] > ticks[0] else 1.5
    getattr(ax, f"set_{axis}lim")(ticks[0] / pad, ticks[-1] * pad)
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(FixedLocator(ticks))
    target.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
    target.set_minor_locator(NullLocator())
    target.set_minor_formatter(NullFormatter())


# ---- the setup line under each title ------------------------------------------------------------------------
def _values(rows: pd.DataFrame, col: str) -> list:
    return sorted({str(v) for v in rows[col].dropna().unique()}) if col in rows.columns else []


def weights(rows: pd.DataFrame) -> str:
    """'random', 'trained', 'random and trained' or 'unknown' from the checkpoint column."""
    ck = rows["checkpoint"].dropna().astype(str) if "checkpoint" in rows.columns else pd.Series([], dtype=str)
    if ck.empty:
        return "unknown"
    random = ck.str.startswith("random:")
    return "random" if random.all() else "trained" if not random.any() else "random and trained"


def setup_line(rows: pd.DataFrame, n_text: str = "", quality: bool = True) -> tuple[str, str | None]:
    """(subtitle, warning): GPU or CPU name, dtype, batch size, weights, n; a warning line when the weights
    are random and the figure is about what the weights know (`quality`)."""
    parts = [", ".join(_values(rows, "device_name") or _values(rows, "device")) or "device not recorded"]
    if _values(rows, "dtype"):
        parts.append(", ".join(_values(rows, "dtype")))
    batches = sorted({int(b) for b in rows["batch_size"].dropna()}) if "batch_size" in rows.columns else []
    if batches:
        parts.append(f"batch {', '.join(map(str, batches))}")
    w = weights(rows)
    random = w in ("random", "random and trained")
    wtext = "weights not recorded" if w == "unknown" else f"{w} weights"
    if random and not quality:
        wtext += " (speed and memory do not depend on the weight values)"
    parts.append(wtext)
    if n_text:
        parts.append(n_text)
    warning = None
    if random and quality:
        warning = "Random weights: scores at chance level say nothing about either family's quality."
    return "  ·  ".join(parts), warning


def n_range(rows: pd.DataFrame, what: str) -> str:
    ns = sorted({int(n) for n in rows["n"].dropna()}) if "n" in rows.columns else []
    if not ns:
        return ""
    return f"n = {ns[0]:,} {what}" if len(ns) == 1 else f"n = {ns[0]:,}–{ns[-1]:,} {what}"


def finish(fig, title: str, subtitle: str, warning: str | None = None, handles=(), labels=(), ncol: int = 3) -> None:
    """Title, setup line(s), warning and a legend below the panels; lays the panels out in what is left."""
    import textwrap

    w, h = fig.get_size_inches()
    chars = max(40, int(w * 13))  # what fits across at 9.5 pt
    lines = [ln for part in subtitle.split("\n") for ln in textwrap.wrap(part, chars, break_on_hyphens=False)]
    y = 0.3
    fig.text(0.5, 1 - y / h, title, ha="center", va="center", fontsize=14, fontweight="bold")
    for ln in lines:
        y += 0.24
        fig.text(0.5, 1 - y / h, ln, ha="center", va="center", fontsize=9.5, color="#333333")
    for ln in textwrap.wrap("⚠ " + warning, chars) if warning else []:
        y += 0.24
        fig.text(0.5, 1 - y / h, ln, ha="center", va="center", fontsize=9.5, color="#B00020")
    bottom_in = 0.1
    if labels:
        bottom_in = 0.25 + 0.22 * math.ceil(len(labels) / ncol)
        fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8.5, frameon=False,
                   bbox_to_anchor=(0.5, 0.04 / h))
    fig.tight_layout(rect=(0, bottom_in / h, 1, 1 - (y + 0.2) / h), h_pad=1.6, w_pad=1.2)


def legend_entries(fig) -> tuple[list, list]:
    """Unique (handle, label) pairs over all axes, in order of first appearance."""
    seen, handles, labels = set(), [], []
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in seen and not lab.startswith("_"):
                seen.add(lab)
                handles.append(h)
                labels.append(lab)
    return handles, labels


def proxy(**kw):
    from matplotlib.lines import Line2D

    return Line2D([], [], **kw)


def percentile_band(rows: pd.DataFrame, metric: str, x: str = "context_len") -> pd.DataFrame | None:
    """The `<metric>_p10` / `<metric>_p90` rows of one series as columns lo, hi indexed by x, or None."""
    lo = rows[rows.metric == f"{metric}_p10"].set_index(x).value
    hi = rows[rows.metric == f"{metric}_p90"].set_index(x).value
    if lo.empty or hi.empty or lo.index.has_duplicates or hi.index.has_duplicates:
        return None
    both = pd.concat({"lo": lo, "hi": hi}, axis=1).dropna().sort_index()
    return both if len(both) else None


# ---- points that could not be measured ---------------------------------------------------------------------
STATUS = {"oom": dict(marker="X", label="out of memory (no measurement)"),
          "skipped": dict(marker="$\u29B8$", label="skipped (predicted over the time or memory budget)")}


def mark_status(ax, status_rows: pd.DataFrame, colour_of, x: str = "context_len") -> None:
    """An OOM / skipped marker at the top of the panel at each x where a model has such a row, in
    `colour_of(model)`; each model a step lower, so two models' markers at one x both show."""
    import matplotlib.transforms as mtransforms

    trans = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    for row, (model, rows) in enumerate(status_rows.groupby("model")):
        y_frac = 0.96 - 0.075 * row
        for metric, style in STATUS.items():
            xs = rows.loc[rows.metric == metric, x].dropna().astype(float)
            if len(xs):
                ax.scatter(xs, [y_frac] * len(xs), transform=trans, marker=style["marker"], s=70,
                           color=colour_of(model), zorder=5, clip_on=False, label=f"_{metric}")


def status_handles(rows: pd.DataFrame) -> tuple[list, list]:
    present = [m for m in STATUS if (rows.metric == m).any()]
    return ([proxy(marker=STATUS[m]["marker"], color="#444444", linestyle="none", markersize=9) for m in present],
            [f"{STATUS[m]['label']}, at the top of a panel" for m in present])
