"""Plots are drawn from tidy rows, and only where there is something to draw."""

from rwkvbench.plots import save_plots
from rwkvbench.results import ResultsWriter


def test_plots_from_tidy_rows(tmp_path):
    w = ResultsWriter(tmp_path)
    for model, family in (("a", "rwkv"), ("b", "transformer")):
        for L in (64, 256):
            w.append([{"metric": "prefill_ms", "value": L / 10, "stderr": 0.1}, {"metric": "state_bytes", "value": L},
                      {"metric": "decode_ms_per_token", "value": 1.0}], model=model, family=family, suite="efficiency",
                     task="t", context_len=L, batch_size=1, device="cpu")
        w.append([{"metric": "acc", "value": 0.5, "stderr": 0.05}], model=model, family=family, suite="quality",
                 task="piqa", device="cpu")
    made = save_plots(w.read(), tmp_path)
    assert [p.name for p in made] == ["efficiency.png", "quality.png"]
    assert all(p.stat().st_size > 10_000 for p in made)


def test_no_plots_without_rows(tmp_path):
    w = ResultsWriter(tmp_path)
    w.append([{"metric": "perplexity", "value": 3.0}], model="a", suite="perplexity", task="t")
    assert save_plots(w.read(), tmp_path) == []
