"""Figure 5: training and validation loss versus training compute for every run of a ladder, with each
family's fitted power law L = a·C^(-b) (suite=scaling rows), and the fitted exponents side by side with
their confidence intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rwkvbench.plots import style
from rwkvbench.train.scaling import FIT_TASK, IRREDUCIBLE

REQUIRED = ["model", "family", "task", "variant", "step", "metric", "value"]
FIT_REQUIRED = ["model", "task", "variant", "metric", "value"]
# The trainer's fit rows (rwkvbench/train/scaling.py): task FIT_TASK, variant compute=total or
# compute=nonembedding (pure power laws), with ",irreducible" for L = E + a·C^-b (not drawn here).
# The fit drawn over the runs: compute from total parameters, as the runs' own `flops` rows count it.
DRAWN_FIT = "compute=total"
EXTRAPOLATE = 3.0  # a fit is drawn over the compute it was fitted on, then dotted this factor further


def _run_names(rows: pd.DataFrame) -> pd.Series:
    """One name per training run: the model and its variant (the trainer's variant is the learning rate,
    which runs of two families can share)."""
    variant = rows.variant.astype("string")
    same = variant.isna() | (variant == rows.model)
    return rows.model.astype("string").where(same, rows.model.astype("string") + " " + variant.fillna(""))


def _curves(rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """One row per (run, step) with its loss columns and the x column (flops, else tokens, else step)."""
    wide = rows.pivot_table(index=["variant", "step"], columns="metric", values="value", aggfunc="first")
    x = next((c for c in ("flops", "tokens") if c in wide.columns), None)
    wide = wide.reset_index()
    if x is None:
        x = "step"
        wide[x] = wide["step"].astype(float)
    return wide, x


def _fits(fits: pd.DataFrame) -> pd.DataFrame:
    """One row per (family, variant) of the fits: a, b, b_ci_low, b_ci_high, r2, l_inf; pure power laws
    only. Fit rows do not name their ladder (task=FIT_TASK): every ladder's figure shows them all."""
    f = fits[fits.task == FIT_TASK]
    f = f[~f.variant.astype("string").str.contains(IRREDUCIBLE, na=False)]
    if f.empty:
        return pd.DataFrame()
    wide = f.pivot_table(index=["model", "variant"], columns="metric", values="value", aggfunc="first")
    fam = f.groupby(["model", "variant"]).family.first() if "family" in f.columns else None
    wide["family"] = fam if fam is not None else wide.index.get_level_values("model")
    wide["family"] = wide.family.fillna(pd.Series(wide.index.get_level_values("model"), index=wide.index))
    return wide.reset_index()


def _loss_panel(ax, curves, x, colours, runs, fits) -> None:
    xs, ys = [], []
    for run in runs.index:
        c = curves[curves.variant == run].sort_values("step")
        colour = colours[run]
        if "loss" in c:
            ax.plot(c[x], c["loss"], color=colour, lw=0.9, alpha=0.45)
            ys += list(c["loss"])
        if "val_loss" in c:
            v = c.dropna(subset=["val_loss"])
            ax.plot(v[x], v["val_loss"], color=colour, lw=1.6, marker=style.family(runs.family[run]).marker, ms=3.5)
            ys += list(v["val_loss"])
        xs += list(c[x])
    if not fits.empty and x == "flops":
        drawn = fits[fits.variant == DRAWN_FIT] if (fits.variant == DRAWN_FIT).any() else fits.iloc[:0]
        for _, f in drawn.iterrows():
            fam = style.family(f.family)
            span = curves[curves.variant.isin(runs.index[runs.family == f.family])][x].dropna()
            span = span[span > 0]
            if span.empty or pd.isna(f.get("a")) or pd.isna(f.get("b")):
                continue
            # over the frontier the fit was made on (c_min .. c_max), then 3x further, thinner: an extrapolation
            lo = f["c_min"] if pd.notna(f.get("c_min")) else span.min()
            hi = f["c_max"] if pd.notna(f.get("c_max")) else span.max()
            c = np.geomspace(lo, hi, 50)
            ax.plot(c, f["a"] * c ** (-f["b"]), color=fam.colour, lw=2.6, ls="--", alpha=0.9,
                    label=f"{fam.label} fit: L = {f['a']:.3g}·C^-{f['b']:.3f}" + _r2(f))
            c = np.geomspace(hi, hi * EXTRAPOLATE, 10)
            ax.plot(c, f["a"] * c ** (-f["b"]), color=fam.colour, lw=1.2, ls=":", alpha=0.9)
            xs.append(c[-1])
    style.log_axis(ax, "x", xs, "flops" if x == "flops" else "decimal")
    style.log_axis(ax, "y", [y for y in ys if np.isfinite(y)], "decimal")
    ax.set_xlabel({"flops": "training compute C (FLOPs)", "tokens": "tokens seen"}.get(x, "step"))
    ax.set_ylabel("loss (nats per token)")
    ax.set_title("Loss versus compute: thin = training loss, markers = validation loss", fontsize=10.5)
    ax.grid(True, alpha=0.3)


def _r2(f) -> str:
    return f", r² = {f['r2']:.3f}" if "r2" in f and pd.notna(f["r2"]) else ""


def _exponent_panel(ax, fits: pd.DataFrame) -> None:
    fits = fits.sort_values(["variant", "family"]).reset_index(drop=True)
    for y, f in fits.iterrows():
        fam = style.family(f.family)
        if pd.notna(f.get("b_ci_low")) and pd.notna(f.get("b_ci_high")):
            ax.plot([f["b_ci_low"], f["b_ci_high"]], [y, y], color=fam.colour, lw=2)
        ax.plot([f["b"]], [y], marker=fam.marker, color=fam.colour, ms=8)
        extra = _r2(f).lstrip(", ") + (f", L∞ = {f['l_inf']:.3g}" if pd.notna(f.get("l_inf", np.nan)) else "")
        ax.text(-0.02, y, f"{fam.label}, {f.variant}\n{extra}", transform=ax.get_yaxis_transform(), ha="right",
                va="center", fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(len(fits) - 0.5, -0.5)
    ax.set_xlabel("exponent b in L = a·C^-b (bar: confidence interval)")
    ax.set_title("Fitted exponents", fontsize=10.5)
    ax.grid(True, axis="x", alpha=0.3)


def plot_train(df: pd.DataFrame) -> dict:
    """{"train" (or "train_<ladder>" for several ladders): figure} from suite=train rows, or {}."""
    rows = style.suite_rows(df, "train", REQUIRED)
    if rows.empty:
        return {}
    fit_rows = style.suite_rows(df, "scaling", FIT_REQUIRED)
    plt = style.pyplot()
    ladders = sorted(rows.task.dropna().unique())
    fits = _fits(fit_rows) if not fit_rows.empty else pd.DataFrame()
    figures = {}
    for ladder in ladders:
        lr = rows[rows.task == ladder]
        lr = lr.assign(variant=_run_names(lr))
        curves, x = _curves(lr)
        runs = lr.groupby("variant").agg(family=("family", "first"), n_params=("n_params", "max"))
        runs = runs.loc[style.model_order(lr, key="variant")]
        colours = style.model_colours(lr, key="variant")
        has_b = not fits.empty and "b" in fits.columns
        ncols = 2 if has_b else 1
        fig, axes = plt.subplots(1, ncols, figsize=(7.5 + 5.5 * (ncols - 1), 7.2), squeeze=False,
                                 gridspec_kw={"width_ratios": [1.5, 1][:ncols]})
        _loss_panel(axes[0][0], curves, x, colours, runs, fits)
        if has_b:
            _exponent_panel(axes[0][1], fits)
        handles, labels = style.legend_entries(fig)
        for run in runs.index:
            handles.append(style.proxy(color=colours[run], marker=style.family(runs.family[run]).marker, ms=4, lw=1.6))
            size = f" ({style.si(runs.n_params[run])} params)" if pd.notna(runs.n_params[run]) else ""
            labels.append(f"{run}{size}")
        sizes = runs.n_params.dropna()
        n_text = f"{len(runs)} runs"
        if len(sizes):
            n_text += f", {style.si(sizes.min())}–{style.si(sizes.max())} params"
        subtitle, warning = style.setup_line(lr, n_text)
        if has_b and x == "flops":
            subtitle += (f"\ndashed: the fitted power law of each family ({DRAWN_FIT}) over the frontier it was "
                         f"fitted on; dotted: extrapolated {EXTRAPOLATE:g}x further")
        name = "train" if len(ladders) == 1 else f"train_{ladder}"
        style.finish(fig, f"Trained from scratch ({ladder}): loss versus compute", subtitle, warning, handles, labels,
                     ncol=3)
        figures[name] = fig
    return figures
