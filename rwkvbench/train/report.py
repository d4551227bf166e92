"""The ladder's report: the loss-versus-compute figure with both families' fits, and markdown tables of
the runs and the fits (ladder.md), written beside the results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rwkvbench.train.scaling import COMPUTE, eligible_points



def runs_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run: shape, counts, tokens, final validation loss, measured speed."""
    if "finished" not in table:
        return pd.DataFrame()
    out = []
    for (model, tag), run in table.groupby(["model", "tag"]):
        if not (run.finished == 1.0).any():
            continue
        final = run[run.step == run.step.max()].iloc[0]
        speed = run.get("tokens_per_s", pd.Series(dtype=float)).dropna()
        mfu = run.get("mfu", pd.Series(dtype=float)).dropna()
        out.append({"model": model, "lr": tag.removeprefix("lr="), "n_layer": int(final.n_layer), "n_embd": int(final.n_embd),
                    "params non-emb (M)": final.params_nonembedding / 1e6, "params total (M)": final.params_total / 1e6,
                    "tokens (M)": final.tokens / 1e6, "epochs": final.epochs, "val loss": final.val_loss,
                    "tokens/s (K)": speed.median() / 1e3 if len(speed) else np.nan,
                    "MFU": mfu.median() if len(mfu) else np.nan, "wall (s)": final.wall_s})
    return pd.DataFrame(out)


def fits_table(fits: dict) -> pd.DataFrame:
    out = []
    for (family, compute), got in fits.items():
        f, sat = got["fit"], got["saturating"] or {}
        out.append({"family": family, "compute": compute, "b": f["b"], "b 95% CI": f"[{f['b_ci_low']:.4f}, {f['b_ci_high']:.4f}]",
                    "a": f["a"], "r2": f["r2"], "frontier points": f["n_points"], "runs": f["n_runs"],
                    "E (irreducible fit)": sat.get("E", np.nan), "b (irreducible fit)": sat.get("b", np.nan),
                    "r2 (irreducible fit)": sat.get("r2", np.nan)})
    return pd.DataFrame(out)


def write_tables(table: pd.DataFrame, fits: dict, path: Path) -> Path:
    parts = ["# Training ladder", "", "## Runs", "", runs_table(table).to_markdown(index=False, floatfmt=".4g"), "",
             "## Loss versus compute: L = a C^-b on the Pareto frontier", "",
             fits_table(fits).to_markdown(index=False, floatfmt=".4g"), ""]
    path.write_text("\n".join(parts))
    return path


def plot_scaling(table: pd.DataFrame, fits: dict, path: Path, min_fraction: float, compute: str = "total") -> Path:
    from rwkvbench.plots import style
    from rwkvbench.plots.train import EXTRAPOLATE

    plt = style.pyplot()
    column = COMPUTE[compute]
    points = eligible_points(table, min_fraction)
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    xs, ys = list(points[column]), list(points.val_loss)
    for family, group in points.groupby("family"):
        look = style.family(family)
        ax.scatter(group[column], group.val_loss, s=10, alpha=0.3, color=look.colour, marker=look.marker)
        got = fits.get((family, compute))
        if got is None:
            continue
        front, f = got["frontier"], got["fit"]
        ax.scatter(front[column], front.val_loss, s=30, color=look.colour, marker=look.marker, edgecolor="black",
                   linewidth=0.5)
        c = np.geomspace(f["c_min"], f["c_max"], 50)
        ax.plot(c, f["a"] * c ** -f["b"], color=look.colour,
                label=f"{look.label}: b = {f['b']:.4f} [{f['b_ci_low']:.4f}, {f['b_ci_high']:.4f}], r² = {f['r2']:.3f}")
        c = np.geomspace(f["c_max"], f["c_max"] * EXTRAPOLATE, 10)
        ax.plot(c, f["a"] * c ** -f["b"], color=look.colour, lw=1.0, ls=":")
        xs += [c[-1]]
        ys += [f["a"] * c[-1] ** -f["b"]]
    style.log_axis(ax, "x", xs, "flops")
    style.log_axis(ax, "y", ys, "decimal")
    ax.set_xlabel(f"training compute C (FLOPs, {compute} parameters)")
    ax.set_ylabel("validation loss (nats per token)")
    ax.set_title("Validation loss versus compute: L = a·C^-b on each family's Pareto frontier", fontsize=10)
    ax.text(0.01, 0.01, "large markers: the frontier (fitted); small: every other validation point; "
            f"lines: the fit over its frontier, dotted {EXTRAPOLATE:g}x further", transform=ax.transAxes,
            fontsize=7, color="#444444")
    ax.legend(fontsize=8, title="exponent b [95% bootstrap CI], r²", title_fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
