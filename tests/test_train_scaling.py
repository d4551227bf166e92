"""Loss versus compute: the Pareto frontier, the power law recovered from synthetic runs with a known
exponent (and its bootstrap interval), the fit with an irreducible term, the rows and the report."""

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from rwkvbench.results import ResultsWriter
from rwkvbench.train import scaling
from rwkvbench.train.report import plot_scaling, write_tables

FIT = OmegaConf.create({"min_fraction": 0.25, "bootstrap": 300, "ci": 0.95, "seed": 0})


def synthetic_ladder(a=30.0, b=0.06, runs=7, family="rwkv", name="rwkv4", noise=0.003, seed=0):
    """Runs ending on L = a C^-b; earlier points of a run are worse the further they are from its end
    (a larger model early in training loses to a smaller one that finished), as in a real ladder."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(runs):
        end = 1e14 * 3.0 ** k
        steps = 10 * 2 ** k
        for i, step in enumerate(np.unique(np.geomspace(max(1, steps / 20), steps, 10).round().astype(int))):
            c = end * step / steps
            loss = a * c ** -b * (1 + 0.03 * np.log10(end / c) ** 1.5) * np.exp(noise * rng.standard_normal())
            rows.append({"model": f"{name}_s{k}", "family": family, "tag": "lr=0.001", "step": step, "val_loss": loss,
                         "flops": c, "flops_nonembedding": c * (0.2 + 0.1 * k), "tokens": c / 6e7,
                         "finished": 1.0 if step == steps else np.nan, "params_total": 1e7, "params_nonembedding": 1e6,
                         "n_layer": 2.0, "n_embd": 64.0, "epochs": 0.5, "wall_s": 1.0, "tokens_per_s": 1e6, "mfu": 0.3})
    return pd.DataFrame(rows)


def test_frontier_keeps_points_no_cheaper_point_beats():
    pts = pd.DataFrame({"flops": [1, 2, 2, 3, 4, 5], "val_loss": [5.0, 4.0, 4.5, 4.2, 3.9, 3.9], "run": list("abcdef")})
    assert scaling.frontier(pts, "flops").run.tolist() == ["a", "b", "e"]


def test_power_law_exact():
    C = np.geomspace(1e14, 1e17, 9)
    fit = scaling.power_law(C, 12.0 * C ** -0.07)
    assert fit["b"] == pytest.approx(0.07, rel=1e-10) and fit["a"] == pytest.approx(12.0, rel=1e-8)
    assert fit["r2"] == pytest.approx(1.0)


def test_fit_recovers_a_known_exponent_from_synthetic_runs():
    table = synthetic_ladder(b=0.06)
    points = scaling.eligible_points(table, FIT.min_fraction)
    assert (points.step >= 0.25 * points.groupby("run").step.transform("max")).all()
    got = scaling.fit_family(points, "flops", n_boot=300, seed=0)
    fit = got["fit"]
    assert fit["b"] == pytest.approx(0.06, abs=0.003)
    assert fit["b_ci_low"] < 0.06 < fit["b_ci_high"] and fit["b_ci_high"] - fit["b_ci_low"] < 0.02
    assert fit["r2"] > 0.98 and fit["n_runs"] == 7 and fit["n_points"] >= 7
    other = scaling.fit_family(scaling.eligible_points(synthetic_ladder(b=0.09), 0.25), "flops", n_boot=50)
    assert other["fit"]["b"] == pytest.approx(0.09, abs=0.004)


def test_irreducible_term_recovered():
    C = np.geomspace(1e13, 1e18, 15)
    got = scaling.saturating_law(C, 1.7 + 400.0 * C ** -0.15)
    assert got["E"] == pytest.approx(1.7, rel=1e-3) and got["b"] == pytest.approx(0.15, rel=1e-3)
    assert got["a"] == pytest.approx(400.0, rel=1e-2) and got["r2"] > 0.9999


def test_rows_tables_and_figure_for_two_families(tmp_path):
    table = pd.concat([synthetic_ladder(), synthetic_ladder(b=0.05, family="transformer", name="neox", seed=1)])
    fits = scaling.scaling_fits(table, FIT)
    assert set(fits) == {(f, c) for f in ("rwkv", "transformer") for c in ("total", "nonembedding")}
    writer = ResultsWriter(tmp_path)
    for rows, common in scaling.scaling_rows(fits, table):
        writer.append(rows, **common)
    df = writer.read()
    b = df[(df.metric == "b") & (df.variant == "compute=total")].set_index("model")
    assert b.loc["neox"].value == pytest.approx(0.05, abs=0.003) and b.loc["rwkv4"].stderr > 0
    assert {"b_ci_low", "b_ci_high", "a", "r2", "E"} <= set(df.metric)
    text = write_tables(table, fits, tmp_path / "ladder.md").read_text()
    assert "neox_s6" in text and "rwkv" in text
    assert plot_scaling(table, fits, tmp_path / "scaling.png", 0.25).stat().st_size > 10_000


def test_fit_inputs_are_merged_with_their_own_provenance(tmp_path):
    from rwkvbench.train.rows import merge_into

    a, b = ResultsWriter(tmp_path / "a"), ResultsWriter(tmp_path / "b")
    common = dict(suite="train", task="corpus", family="rwkv", context_len=1024)
    a.append([{"metric": "val_loss", "value": 3.0}], model="rwkv4_s1", variant="lr=0.001", step=5, **common)
    b.append([{"metric": "val_loss", "value": 2.5}], model="neox_s1", variant="lr=0.001", step=5,
             **{**common, "family": "transformer"})
    merged = merge_into(ResultsWriter(tmp_path / "c"), [tmp_path / "a", tmp_path / "b" / "results.parquet"])
    assert sorted(merged.model) == ["neox_s1", "rwkv4_s1"] and set(merged.run_id) == {a.run_id, b.run_id}
    assert len(ResultsWriter(tmp_path / "c").read()) == 2
