"""Figures from tidy rows: one per suite where its rows exist, labelled with units, OOM / skipped points
marked, the setup stated, rows never averaged, and one clear error for a missing column."""

import math

import numpy as np
import pandas as pd
import pytest
import result_fixtures as fx

from rwkvbench.errors import UserError
from rwkvbench.plots import FIGURES, make_figures, plot_efficiency, plot_quality, plot_recall, save_plots, style
from rwkvbench.results import ResultsWriter

plt = style.pyplot()

SUITES = {"quality": (fx.quality_rows, ["quality"]), "efficiency": (fx.efficiency_rows, ["efficiency"]),
          "recall": (fx.recall_rows, ["recall_copy", "recall_phonebook", "recall_mqar", "recall_passkey"]),
          "prompt": (fx.prompt_rows, ["prompt"]), "train": (fx.train_rows, ["train"]),
          "kernel": (fx.kernel_rows, ["kernel"])}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def texts(fig) -> str:
    """Every piece of text in a figure: titles, labels, tick labels, legend entries, free text."""
    return "\n".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")) if t.get_text())


def visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


@pytest.mark.parametrize("suite", SUITES)
def test_each_figure_from_fixture_rows(tmp_path, suite):
    make, names = SUITES[suite]
    paths = save_plots(make(), tmp_path)
    assert [p.stem for p in paths] == names
    for p in paths:
        assert p.stat().st_size > 20_000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("suite", SUITES)
def test_every_axis_is_labelled(suite):
    make, _ = SUITES[suite]
    for name, fig in make_figures(make()).items():
        for ax in visible_axes(fig):
            assert ax.get_xlabel(), f"{name}: a panel without an x label ({ax.get_title()})"
            forest = len(ax.get_yticks()) == 0  # a forest plot names its rows instead
            assert ax.get_ylabel() or forest, f"{name}: a panel without a y label ({ax.get_title()})"
            assert ax.get_title(), f"{name}: a panel without a title"


def test_efficiency_units_ticks_oom_and_weights_line():
    df = fx.efficiency_rows()
    fig = plot_efficiency(df)["efficiency"]
    axes = visible_axes(fig)
    ylabels = [ax.get_ylabel() for ax in axes]
    assert "prefill latency (ms)" in ylabels and "decode latency (ms / token)" in ylabels
    memory = [ax for ax in axes if ax.get_ylabel() == "peak GPU memory allocated"]
    assert len(memory) == 2  # one per batch size
    ticks = [t.get_text() for t in memory[0].get_yticklabels()]
    assert any(t.endswith("GiB") for t in ticks), ticks
    xticks = [t.get_text() for t in axes[0].get_xticklabels()]
    assert {"256", "1K", "16K", "1M"} <= set(xticks), xticks
    assert not any("10^" in t or "times" in t or "×" in t for t in xticks + ticks)
    # every value lies within the labelled ticks (no line above the last label)
    for ax in axes:
        lo, hi = min(ax.get_yticks()), max(ax.get_yticks())
        for line in ax.get_lines():
            y = np.asarray(line.get_ydata(), dtype=float)
            y = y[np.isfinite(y)]
            if len(y):
                assert lo * 0.999 <= y.min() and y.max() <= hi * 1.001, (ax.get_title(), y.min(), y.max(), lo, hi)
    # OOM and skipped points: a marker at each such context, for each panel of that batch size
    status = df[df.metric.isin(["oom", "skipped"]) & (df.batch_size == 1)]
    marked = set()
    for ax in axes[:4]:  # batch 1
        for coll in ax.collections:
            marked |= {float(x) for x, _ in coll.get_offsets()}
    assert set(status.context_len.astype(float)) <= marked
    assert "out of memory" in texts(fig) and "skipped" in texts(fig)
    # the weights alone: a horizontal line at each model's weight bytes on the memory panel
    weights = set(df[df.metric == "weights_bytes"].value)
    flat = {line.get_ydata()[0] for line in memory[0].get_lines() if len(set(line.get_ydata())) == 1}
    assert weights <= flat
    assert "the weights alone" in texts(fig)


def test_subtitle_states_the_setup():
    fig = plot_efficiency(fx.efficiency_rows())["efficiency"]
    t = texts(fig)
    for needed in ("NVIDIA H200", "float16", "batch 1, 8", "random weights", "n = 5 runs", "n = 64 steps",
                   "10th–90th percentile"):
        assert needed in t, needed
    q = texts(plot_quality(fx.quality_rows())["quality"])
    assert "trained weights" in q and "± 1 standard error" in q and "Random weights" not in q
    r = texts(plot_recall(fx.recall_rows())["recall_passkey"])
    assert "Random weights" in r and "n = 100 items per point" in r


def test_quality_draws_published_numbers_and_chance():
    fig = plot_quality(fx.quality_rows())["quality"]
    t = texts(fig)
    assert "published: RWKV paper v1" in t and "published: EleutherAI Pythia evals" in t
    assert "chance" in t and "Zero-shot" in t
    piqa = next(ax for ax in fig.axes if ax.get_title().startswith("PIQA"))
    hollow = [c for c in piqa.containers if c.lines[0].get_markerfacecolor() == "white"]
    assert len(hollow) == 3  # RWKV-4 and Pythia from the paper, Pythia from EleutherAI
    assert all("published" in c.get_label() for c in hollow)
    assert any(ln.get_ydata()[0] == 0.5 for ln in piqa.get_lines() if len(set(ln.get_ydata())) == 1)


def test_quality_title_follows_the_shots_and_never_averages_them():
    df = fx.quality_rows(variants=("0-shot", "5-shot"))
    fig = plot_quality(df)["quality"]
    assert "Zero-shot" not in texts(fig) and "0-shot, 5-shot" in texts(fig)
    piqa = next(ax for ax in fig.axes if ax.get_title().startswith("PIQA · acc"))
    ours = [c.lines[0] for c in piqa.containers if "this run" in c.get_label()]
    assert len(ours) == 4  # two families x two shot counts, each its own line
    expected = df[(df.task == "piqa") & (df.metric == "acc")]
    plotted = sorted(float(y) for ln in ours for y in ln.get_ydata())
    assert plotted == pytest.approx(sorted(expected.value))  # the rows themselves, not means


def test_two_variants_at_one_point_become_two_lines():
    df = fx.efficiency_rows()
    df = df[(df.batch_size == 1) & (df.model == "rwkv4_1b5")]
    other = df.assign(variant="prefill=eager;decode=compiled", value=df.value * 2)
    fig = plot_efficiency(pd.concat([df, other]))["efficiency"]
    prefill = next(ax for ax in fig.axes if ax.get_ylabel() == "prefill latency (ms)")
    lines = [ln for ln in prefill.get_lines() if len(ln.get_xdata()) == 7]
    assert len(lines) == 2
    ratio = np.asarray(lines[0].get_ydata()) / np.asarray(lines[1].get_ydata())
    assert np.allclose(ratio, 0.5) or np.allclose(ratio, 2.0)  # each variant drawn as measured


def test_accuracy_zero_still_shows_an_axis():
    df = fx.quality_rows(checkpoint="random:seed=0")
    df = df[df.task == "lambada_openai"].copy()
    df.loc[df.metric == "acc", ["value", "stderr"]] = 0.0
    fig = plot_quality(df)["quality"]
    acc = next(ax for ax in fig.axes if ax.get_title().startswith("LAMBADA · acc"))
    lo, hi = acc.get_ylim()
    assert lo < 0 < hi and hi - lo > 0.05
    assert len([t for t in acc.get_yticklabels() if t.get_text()]) >= 3
    assert "Random weights" in texts(fig)


def test_recall_axes_per_parameter_and_oom_marker():
    figs = plot_recall(fx.recall_rows())
    mqar = figs["recall_mqar"]
    assert [ax.get_xlabel() for ax in visible_axes(mqar)] == ["context length (tokens)", "pairs",
                                                              "state / KV-cache bytes held"] * 2  # two scores
    passkey = figs["recall_passkey"]
    titles = [ax.get_title() for ax in visible_axes(passkey)]
    assert any("order=question_first" in t for t in titles) and any("order=question_last" in t for t in titles)
    # one row of panels per score and order; the evaluator's diagnostics (log-probs, wall time) are not scores
    assert len([t for t in titles if "exact match" in t]) == 2 * 3
    assert len([t for t in titles if "token accuracy" in t]) == 2 * 3 and len(titles) == 4 * 3
    assert not any(w in t for t in titles for w in ("logprob", "wall_seconds", "context_tokens"))
    context_panels = [ax for ax in visible_axes(passkey) if ax.get_xlabel() == "context length (tokens)"]
    for ax in context_panels:
        assert any(1048576.0 in {float(x) for x, _ in c.get_offsets()} for c in ax.collections)


def test_missing_required_column_is_one_clear_error():
    df = fx.efficiency_rows().drop(columns=["context_len"])
    with pytest.raises(UserError, match="efficiency rows have no column 'context_len'"):
        plot_efficiency(df)
    with pytest.raises(UserError, match="no column 'metric'"):
        save_plots(pd.DataFrame({"suite": ["quality"], "value": [1.0]}), "/nonexistent")


def test_optional_columns_may_be_missing(tmp_path):
    """Results written before the provenance columns existed still plot (this branch's writer has none)."""
    w = ResultsWriter(tmp_path)
    for model, family in (("a", "rwkv"), ("b", "transformer")):
        for L in (64, 256):
            w.append([{"metric": "prefill_ms", "value": L / 10, "stderr": 0.1}, {"metric": "state_bytes", "value": L},
                      {"metric": "decode_ms_per_token", "value": 1.0}], model=model, family=family, suite="efficiency",
                     task="t", context_len=L, batch_size=1, device="cpu")
        w.append([{"metric": "acc", "value": 0.5, "stderr": 0.05}], model=model, family=family, suite="quality",
                 task="piqa", device="cpu", n_params=1000)
    made = save_plots(w.read(), tmp_path)
    assert [p.name for p in made] == ["quality.png", "efficiency.png"]
    assert "weights not recorded" in texts(plot_efficiency(w.read())["efficiency"])


def test_no_plots_without_rows(tmp_path):
    w = ResultsWriter(tmp_path)
    w.append([{"metric": "perplexity", "value": 3.0}], model="a", suite="perplexity", task="t")
    assert save_plots(w.read(), tmp_path) == []
    assert all(plot(fx.quality_rows().iloc[:0]) == {} for plot in FIGURES)


@pytest.mark.parametrize("lo,hi,unit", [(1.4, 1.45, "decimal"), (0.07, 6000.0, "decimal"), (256, 2**20, "tokens"),
                                        (983040, 3.2e9, "bytes"), (1.3e6, 1.4e10, "params"), (3e14, 2e17, "flops"),
                                        (60, 60, "decimal")])
def test_log_ticks_enclose_the_data(lo, hi, unit):
    ticks = style.log_ticks(lo, hi, unit)
    assert ticks[0] <= lo and ticks[-1] >= hi and 2 <= len(ticks) <= 8
    assert ticks == sorted(ticks) and math.log10(ticks[-1] / ticks[0]) <= math.log10(hi / lo) + 3.1


def test_tick_labels_read_like_numbers():
    assert [style.tokens(v) for v in (256, 1024, 16384, 2**20)] == ["256", "1K", "16K", "1M"]
    assert [style.binary_bytes(v) for v in (512, 2**20, 3 * 2**30)] == ["512 B", "1 MiB", "3 GiB"]
    assert [style.plain(v) for v in (60, 0.5, 20000, 3e16)] == ["60", "0.5", "20,000", "3e16"]
    assert [style.si(v) for v in (169e6, 1.5e9)] == ["169M", "1.5B"]


def test_train_figure_keeps_runs_of_both_families_apart_and_draws_each_fit():
    from rwkvbench.plots import plot_train

    fig = plot_train(fx.train_rows())["train"]
    t = texts(fig)
    # both families trained at lr=0.002: twelve runs, each its own legend entry (model and variant)
    runs = {line for line in t.splitlines() if "lr=0.002 (" in line}
    assert len(runs) == 12 and "rwkv4_d128 lr=0.002 (13.7M params)" in runs and "neox_d128 lr=0.002 (13.7M params)" in runs
    loss_ax, exponent_ax = visible_axes(fig)[:2]
    dashed = [line for line in loss_ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 2  # the compute=total power law of each family
    assert "RWKV fit: L = 25·C^-0.050" in t
    # the exponents: pure power laws only (the irreducible-loss fit is another model of the curve)
    labels = [x.get_text() for x in exponent_ax.texts]
    assert len(labels) == 4 and not any("irreducible" in lab for lab in labels)


def test_kernel_figure_tells_forward_from_backward_and_marks_a_skipped_shape():
    fig = make_figures(fx.kernel_rows())["kernel"]
    single = fig.axes[1]  # B=1, C=768: one T, so no line joins the points
    markers = {line.get_marker() for line in single.get_lines() if line.get_label().startswith("rwkvbench")}
    assert markers == {"o", "s"}
    assert "skipped" in texts(fig)  # the rwkv package at 1M tokens (int32 indexing): a marker and its legend entry
    assert any(len(c.get_offsets()) for c in fig.axes[0].collections if c.get_label() == "_skipped")
