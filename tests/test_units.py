"""The one owner of units of work: skip / run / replace from the complete key, budgets, OOM and NaN rows;
and through the CLI config: reruns with changed settings re-measure, identical ones skip."""

import math
import time

import pytest
import torch
from hydra import compose, initialize_config_dir

from rwkvbench.config import conf_dir
from rwkvbench.models import checkpoints as ck
from rwkvbench.models.registry import load_model
from rwkvbench.results import ResultsWriter, read_results
from rwkvbench.run import run
from rwkvbench.units import Budget, SkipUnit, Unit, run_units


@pytest.fixture(scope="module")
def tiny():
    return load_model("rwkv4_tiny", device="cpu")


def counting_unit(calls, value=1.0, param=0, context_len=8):
    def measure(budget):
        calls.append(context_len)
        return [{"metric": "x", "value": value, "n": 1}]

    return Unit(key={"suite": "s", "task": "t", "context_len": context_len}, measure=measure, params={"p": param})


def test_identical_rerun_skips_and_changed_params_remeasure(tmp_path, tiny):
    calls = []
    w = ResultsWriter(tmp_path)
    assert run_units(tiny, [counting_unit(calls)], w)["ran"] == 1
    assert run_units(tiny, [counting_unit(calls)], ResultsWriter(tmp_path))["reused"] == 1
    assert run_units(tiny, [counting_unit(calls, value=2.0, param=1)], ResultsWriter(tmp_path))["ran"] == 1
    assert len(calls) == 2
    df = read_results(tmp_path)
    assert df.value.tolist() == [2.0] and df.fingerprint.nunique() == 1  # the new measurement replaced the old


def test_rows_carry_provenance(tmp_path, tiny):
    run_units(tiny, [counting_unit([])], ResultsWriter(tmp_path))
    row = read_results(tmp_path).iloc[0]
    assert row.checkpoint == "random:seed=0" and row.device_name and row.device == "cpu" and len(row.fingerprint) == 16


def test_non_finite_metric_is_never_a_plain_number(tmp_path, tiny):
    with pytest.warns(UserWarning, match="came out nan"):
        run_units(tiny, [counting_unit([], value=math.nan)], ResultsWriter(tmp_path))
    row = read_results(tmp_path).iloc[0]
    assert row.value is None or math.isnan(row.value)
    assert row.note == "non-finite value (nan)"


def test_out_of_memory_becomes_a_row_and_other_errors_stay_errors(tmp_path, tiny):
    def oom(budget):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    def bug(budget):
        raise KeyError("bug")

    w = ResultsWriter(tmp_path)
    assert run_units(tiny, [Unit(key={"suite": "s", "task": "t"}, measure=oom)], w)["oom"] == 1
    row = read_results(tmp_path).iloc[0]
    assert (row.metric, row.value) == ("oom", 1.0) and "Tried to allocate" in row.note
    with pytest.raises(KeyError):
        run_units(tiny, [Unit(key={"suite": "s", "task": "u"}, measure=bug)], w)


def test_run_budget_turns_the_rest_into_skipped_rows_which_rerun(tmp_path, tiny):
    def slow(budget):  # the first one outlasts the run's 1 s budget
        time.sleep(1.2)
        return [{"metric": "x", "value": 1.0}]

    def skip(budget):
        raise SkipUnit("beyond this device")

    units = [Unit(key={"suite": "s", "task": "t", "context_len": 4}, measure=skip)]
    units += [Unit(key={"suite": "s", "task": "t", "context_len": L}, measure=slow) for L in (1, 2, 3)]
    counts = run_units(tiny, units, ResultsWriter(tmp_path), max_minutes=1 / 60)
    assert counts == {"ran": 1, "reused": 0, "skipped": 3, "oom": 0}
    df = read_results(tmp_path).set_index("context_len")
    assert df.loc[3, "metric"] == "skipped" and "max_minutes" in df.loc[3, "note"]
    assert df.loc[4, "note"] == "beyond this device"
    again = run_units(tiny, units[1:], ResultsWriter(tmp_path))
    assert again == {"ran": 2, "reused": 1, "skipped": 0, "oom": 0}
    assert read_results(tmp_path).set_index("context_len").loc[3, "metric"] == "x"


def test_budget_counts_down_to_the_earlier_of_its_limits():
    b = Budget(seconds=100, deadline=time.monotonic() + 0.05)
    assert 0 < b.remaining() <= 0.05 and not b.expired()
    time.sleep(0.06)
    assert b.expired() and Budget().remaining() == math.inf


def test_ranks_share_the_units(tmp_path, tiny):
    calls = []
    units = [counting_unit(calls, context_len=L) for L in range(5)]
    for rank in (0, 1):
        run_units(tiny, units, ResultsWriter(tmp_path), rank=rank, world_size=2)
    assert calls == [0, 2, 4, 1, 3] and len(read_results(tmp_path)) == 5


def _cfg(*overrides):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=["device=cpu", "compare=false", *overrides])


def test_rerun_with_changed_dtype_or_text_remeasures(tmp_path):
    base = ["task=perplexity", "task.parts.0.max_tokens=200", "task.parts.0.context_len=32"]
    run(_cfg(*base), tmp_path)
    first = read_results(tmp_path)
    run(_cfg(*base), tmp_path)
    assert read_results(tmp_path).run_id.unique().tolist() == first.run_id.unique().tolist()  # identical: kept
    text = tmp_path / "text.txt"
    text.write_text("A different text to measure. " * 20)
    run(_cfg(*base, f"task.parts.0.text={text}"), tmp_path)
    run(_cfg(*base, "dtype=bf16"), tmp_path)
    df = read_results(tmp_path)
    assert set(df.dtype) == {"float32", "bfloat16"} and df.run_id.nunique() == 3
    assert df[df.dtype == "float32"].variant.nunique() == 2  # the docs and the new text


def test_efficiency_overall_budget_holds_on_cpu(tmp_path):
    t0 = time.monotonic()
    run(_cfg("task=efficiency", "task.parts.0.max_minutes=0.1667", "task.parts.0.batch_sizes=[1]"), tmp_path)
    assert time.monotonic() - t0 < 15
    df = read_results(tmp_path)
    skipped = df[df.metric == "skipped"]
    assert len(skipped) >= 3 and set(skipped.context_len) >= {16384, 65536, 1048576}
    measured = df[df.metric == "prefill_ms"]
    assert len(measured) >= 1 and (measured.n >= 1).all()
    assert measured.variant.str.contains("prefill=chunk4096+reference_wkv+eager;decode=eager", regex=False).all()


def test_nan_checkpoint_is_one_error_naming_the_tensor(tmp_path):
    shape = ck.RWKV4Shape(n_layer=2, n_embd=8, vocab_size=257, dim_ffn=16)
    sd = ck.random_rwkv4(shape)
    sd["blocks.1.att.key.weight"][3, 4] = float("nan")
    ck.save_blinkdl(sd, tmp_path / "nan.pth")
    with pytest.raises(ck.CheckpointError, match=r"nan.pth: tensor 'blocks.1.att.key.weight' has 1 non-finite"):
        load_model("rwkv4", path=str(tmp_path / "nan.pth"), tokenizer="bytes", device="cpu")


def test_a_kept_unit_hands_its_stored_rows_to_its_evaluator(tmp_path, tiny):
    run_units(tiny, [counting_unit([], value=3.0)], ResultsWriter(tmp_path))
    seen = []
    unit = counting_unit([], value=3.0)
    unit.kept = seen.extend
    assert run_units(tiny, [unit], ResultsWriter(tmp_path))["reused"] == 1
    assert [(r["metric"], r["value"], r["context_len"]) for r in seen] == [("x", 3.0, 8)]


def test_efficiency_trend_extrapolates_time_as_a_power_law_and_memory_linearly():
    from rwkvbench.evals.efficiency import Trend

    trend = Trend(torch.device("cpu"))
    # quadratic growth between 1K and 4K (attention): 16K is predicted 16x the 4K time, not 4x
    trend.learn(1024, 1, [{"metric": "prefill_ms", "value": 100.0}])
    trend.learn(4096, 1, [{"metric": "prefill_ms", "value": 1600.0}])
    seconds, how = trend.predicted_seconds(16384, 1)
    assert seconds == pytest.approx(25.6) and "context^2.00" in how
    trend.check(16384, 1, Budget(60))  # warm-up and one timed prefill: 51 s
    with pytest.raises(SkipUnit, match="predicted to take 26 s"):
        trend.check(16384, 1, Budget(20))
    # sub-linear growth (a fixed overhead) is extrapolated linearly, never below
    trend.learn(1024, 8, [{"metric": "prefill_ms", "value": 100.0}])
    trend.learn(4096, 8, [{"metric": "prefill_ms", "value": 200.0}])
    assert trend.predicted_seconds(16384, 8)[0] == pytest.approx(0.8)
    # memory: a peak growing linearly in context past the device is an oom row before it runs; past 85%, skipped
    trend.memory = 100 * 2**30
    trend.learn(1024, 2, [{"metric": "prefill_peak_bytes", "value": 10 * 2**30}])
    trend.learn(2048, 2, [{"metric": "decode_peak_bytes", "value": 40 * 2**30}])
    trend.check(3072, 2, Budget(None))  # 70 GiB fits
    with pytest.raises(SkipUnit, match="near the memory limit: a peak of 85 GiB") as e:
        trend.check(3600, 2, Budget(None))
    assert e.value.metric == "skipped"
    with pytest.raises(SkipUnit, match="predicted out of memory: a peak of 130 GiB") as e:
        trend.check(5120, 2, Budget(None))
    assert e.value.metric == "oom"
    # a kept oom row stops longer contexts of its batch size
    trend.learn(8192, 4, [{"metric": "oom", "value": 1.0}])
    with pytest.raises(SkipUnit, match="ran out of memory at the shorter context 8192"):
        trend.check(16384, 4, Budget(None))


def test_a_cheap_prefill_gets_a_median_even_when_its_warm_up_spent_the_budget():
    from rwkvbench.evals.efficiency import MIN_CHEAP, measure_prefill

    class Slow:
        """Its first prefill (the warm-up) takes longer than the point's whole budget, as a compile does."""
        device, calls = torch.device("cpu"), 0

        def prefill(self, ids, logits):
            self.calls += 1
            time.sleep(0.3 if self.calls == 1 else 0.002)
            return torch.zeros(1), None

    rows, _ = measure_prefill(Slow(), torch.zeros(1, 8, dtype=torch.long), repeats=5, budget=Budget(0.2))
    assert rows[0]["metric"] == "prefill_ms" and rows[0]["n"] == MIN_CHEAP


def test_summary_names_each_unit_not_measured_by_its_variant():
    import pandas as pd

    from rwkvbench.run import summary

    rows = [{"model": "neox_tiny", "task": "passkey", "context_len": 16384, "batch_size": None, "variant": v,
             "metric": "skipped", "value": 1.0, "note": "over budget"}
            for v in ("depth=0.00;order=question_first", "depth=0.50;order=question_first")]
    lines = [line for line in summary(pd.DataFrame(rows)).splitlines() if line.startswith("  neox_tiny")]
    assert len(lines) == 2 and len(set(lines)) == 2 and "depth=0.50" in lines[1]
