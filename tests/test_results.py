"""The tidy writer: schema, round trip through Parquet and CSV, rerun de-duplication, resume."""

import pandas as pd
import pytest

from rwkvbench.results import COLUMNS, ResultsWriter, read_results

COMMON = dict(model="m", family="rwkv", n_params=10, dtype="float32", device="cpu", suite="s", task="t",
              variant="v", batch_size=1)


def test_round_trip(tmp_path):
    w = ResultsWriter(tmp_path)
    w.append([{"metric": "acc", "value": 0.5, "stderr": 0.1, "n": 100, "context_len": 64}], **COMMON)
    df = read_results(tmp_path)
    assert list(df.columns) == COLUMNS
    row = df.iloc[0]
    assert (row.metric, row.value, row.stderr, row.n, row.context_len, row.run_id) == ("acc", 0.5, 0.1, 100, 64, w.run_id)
    csv = pd.read_csv(tmp_path / "results.csv")
    assert list(csv.columns) == COLUMNS and csv.value.tolist() == [0.5]


def test_rerun_replaces_same_measurement_and_keeps_others(tmp_path):
    ResultsWriter(tmp_path).append([{"metric": "acc", "value": 0.5}, {"metric": "f1", "value": 0.7}], **COMMON)
    ResultsWriter(tmp_path).append([{"metric": "acc", "value": 0.6}], **COMMON)
    df = read_results(tmp_path).set_index("metric")
    assert len(df) == 2 and df.loc["acc", "value"] == 0.6 and df.loc["f1", "value"] == 0.7


def test_has_finds_finished_units(tmp_path):
    w = ResultsWriter(tmp_path)
    assert not w.has(model="m", context_len=128)
    w.append([{"metric": "ms", "value": 1.0, "context_len": 128}], **COMMON)
    assert w.has(model="m", context_len=128) and not w.has(model="m", context_len=256)


def test_unknown_column_is_refused_and_nothing_written(tmp_path):
    w = ResultsWriter(tmp_path)
    with pytest.raises(ValueError, match="outside the schema"):
        w.append([{"metric": "acc", "value": 1.0, "accuracy_typo": 3}], **COMMON)
    assert not (tmp_path / "results.parquet").exists()


def test_failure_mid_sweep_keeps_finished_units(tmp_path):
    w = ResultsWriter(tmp_path)
    with pytest.raises(RuntimeError):
        for L in (64, 128, 256):
            if L == 256:
                raise RuntimeError("crash")
            w.append([{"metric": "ms", "value": float(L), "context_len": L}], **COMMON)
    assert sorted(read_results(tmp_path).context_len.tolist()) == [64, 128]
