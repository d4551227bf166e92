"""Loss versus compute: the Pareto frontier of validation points and power-law fits to it.

The RWKV paper (arXiv 2305.13048, §4.2, Figure 4) fits a line in log-log to the Pareto-optimal points of
its runs, L = a C^-b, and reports r^2 = 0.994. Here, per family:
* points: every validation point of every finished run past the first `min_fraction` of the run (the
  initial transient from ln V is no power law), with compute = tokens x compute per token (the total or
  the non-embedding count, train/families.py);
* frontier: the points no point of lower or equal compute beats (the running minimum of val loss);
* fit: least squares of log L on log C over the frontier, r^2 in log space; the exponent's confidence
  interval by bootstrap over runs (runs drawn with replacement, frontier and fit redone; points along one
  run are not independent, runs are); and separately a fit with an irreducible term, L = E + a C^-b.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COMPUTE = {"total": "flops", "nonembedding": "flops_nonembedding"}


def eligible_points(table: pd.DataFrame, min_fraction: float) -> pd.DataFrame:
    """Validation points of finished runs from min_fraction of each run on, with a `run` column."""
    table = table.copy()
    table["run"] = table.model + "/" + table.tag
    if "finished" not in table:
        return table.iloc[:0]
    last = table[table.finished == 1.0].groupby("run").step.max()
    table = table[table.run.isin(last.index) & table.val_loss.notna()]
    return table[table.step >= min_fraction * table.run.map(last)]


def _frontier_order(C: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Indices of the frontier points in order of compute."""
    order = np.lexsort((L, C))
    best_before = np.concatenate([[np.inf], np.minimum.accumulate(L[order])[:-1]])
    return order[L[order] < best_before]


def frontier(points: pd.DataFrame, compute: str) -> pd.DataFrame:
    return points.iloc[_frontier_order(points[compute].to_numpy(float), points.val_loss.to_numpy(float))]


def power_law(C, L) -> dict:
    """L = a C^-b by least squares in log-log; r^2 of that line."""
    x, y = np.log(np.asarray(C, float)), np.log(np.asarray(L, float))
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = ((y - y.mean()) ** 2).sum()
    return {"a": float(np.exp(intercept)), "b": float(-slope), "r2": float(1 - (residual ** 2).sum() / total)}


def saturating_law(C, L) -> dict | None:
    """L = E + a C^-b (least squares in log L); None when it does not converge."""
    from scipy.optimize import curve_fit

    C, L = np.asarray(C, float), np.asarray(L, float)
    x = np.log(C / C[0])  # compute relative to the first point: keeps the parameters O(1)
    y = np.log(L)

    def model(x, E, log_a, b):
        return np.log(E + np.exp(log_a - b * x))

    start = power_law(C, L)
    try:
        (E, log_a, b), _ = curve_fit(model, x, y, p0=[0.5 * L.min(), np.log(0.5 * L[0]), start["b"] * 2],
                                     bounds=([0.0, -np.inf, 0.0], [L.min(), np.inf, np.inf]), maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    residual = y - model(x, E, log_a, b)
    r2 = 1 - (residual ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return {"E": float(E), "a": float(np.exp(log_a) * C[0] ** b), "b": float(b), "r2": float(r2)}


def bootstrap_exponent(points: pd.DataFrame, compute: str, n: int, ci: float, seed: int) -> dict:
    runs = [(g[compute].to_numpy(float), g.val_loss.to_numpy(float)) for _, g in points.groupby("run")]
    rng = np.random.default_rng(seed)
    exponents = []
    for _ in range(n):
        pick = rng.integers(len(runs), size=len(runs))
        C = np.concatenate([runs[i][0] for i in pick])
        L = np.concatenate([runs[i][1] for i in pick])
        front = _frontier_order(C, L)
        if len(np.unique(C[front])) >= 3:
            exponents.append(power_law(C[front], L[front])["b"])
    if len(exponents) < max(10, n // 10):
        return {"b_ci_low": np.nan, "b_ci_high": np.nan, "b_se": np.nan}
    lo, hi = np.quantile(exponents, [(1 - ci) / 2, (1 + ci) / 2])
    return {"b_ci_low": float(lo), "b_ci_high": float(hi), "b_se": float(np.std(exponents, ddof=1))}


def fit_family(points: pd.DataFrame, compute: str, n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> dict | None:
    """The frontier and both fits for one family's points; None with fewer than 3 frontier points."""
    front = frontier(points, compute)
    if len(front) < 3:
        return None
    fit = {**power_law(front[compute], front.val_loss), **bootstrap_exponent(points, compute, n_boot, ci, seed),
           "n_points": len(front), "n_runs": int(points.run.nunique()),
           "c_min": float(front[compute].min()), "c_max": float(front[compute].max())}
    return {"fit": fit, "saturating": saturating_law(front[compute].to_numpy(), front.val_loss.to_numpy()),
            "frontier": front}


def scaling_fits(table: pd.DataFrame, fit_cfg) -> dict:
    """{(results family, compute name): fit_family(...)} for every family with enough points."""
    points = eligible_points(table, float(fit_cfg.min_fraction))
    fits = {}
    for family, group in points.groupby("family"):
        for name, column in COMPUTE.items():
            got = fit_family(group, column, int(fit_cfg.bootstrap), float(fit_cfg.ci), int(fit_cfg.seed))
            if got is not None:
                fits[(family, name)] = got
    return fits


FIT_TASK = "loss_vs_compute"  # the task of the fit rows, whatever the ladder's corpus
IRREDUCIBLE = "irreducible"  # in the variant of the L = E + a C^-b fits


def scaling_rows(fits: dict, table: pd.DataFrame) -> list[tuple[list[dict], dict]]:
    """(rows, common columns) per fit, suite=scaling, in the tidy schema."""
    out = []
    for (family, compute), got in fits.items():
        name = table[table.family == family].model.iloc[0].rpartition("_")[0]
        common = {"model": name, "family": family, "suite": "scaling", "task": FIT_TASK}
        fit = got["fit"]
        rows = [{"metric": "b", "value": fit["b"], "stderr": fit["b_se"], "n": fit["n_points"]},
                *({"metric": k, "value": fit[k]} for k in ("b_ci_low", "b_ci_high", "a", "r2", "n_points", "n_runs",
                                                            "c_min", "c_max"))]
        out.append((rows, {**common, "variant": f"compute={compute}"}))
        if got["saturating"] is not None:
            sat = [{"metric": k, "value": v} for k, v in got["saturating"].items()]
            out.append((sat, {**common, "variant": f"compute={compute},{IRREDUCIBLE}"}))
    return out
