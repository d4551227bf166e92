"""The tidy writer: schema, round trip through Parquet and CSV, replacement, concurrent writers, crashes,
damaged files, provenance."""

import random
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from rwkvbench.results import COLUMNS, ResultsError, ResultsWriter, read_results, read_runs

COMMON = dict(model="m", family="rwkv", n_params=10, dtype="float32", device="cpu", suite="s", task="t",
              variant="v", batch_size=1)


def test_round_trip(tmp_path):
    w = ResultsWriter(tmp_path)
    w.append([{"metric": "acc", "value": 0.5, "stderr": 0.1, "n": 100, "context_len": 64, "note": "x"}], **COMMON)
    df = read_results(tmp_path)
    assert list(df.columns) == COLUMNS
    row = df.iloc[0]
    assert (row.metric, row.value, row.stderr, row.n, row.context_len, row.run_id, row.note) == \
        ("acc", 0.5, 0.1, 100, 64, w.run_id, "x")
    csv = pd.read_csv(tmp_path / "results.csv")
    assert list(csv.columns) == COLUMNS and csv.value.tolist() == [0.5]


def test_rerun_replaces_same_measurement_and_keeps_others(tmp_path):
    ResultsWriter(tmp_path).append([{"metric": "acc", "value": 0.5}, {"metric": "f1", "value": 0.7}], **COMMON)
    ResultsWriter(tmp_path).append([{"metric": "acc", "value": 0.6}], **COMMON)
    df = read_results(tmp_path).set_index("metric")
    assert len(df) == 2 and df.loc["acc", "value"] == 0.6 and df.loc["f1", "value"] == 0.7


def test_replace_drops_a_units_earlier_rows(tmp_path):
    w = ResultsWriter(tmp_path)
    w.append([{"metric": "skipped", "value": 1.0, "note": "budget"}], fingerprint="a", **COMMON, context_len=8)
    w.append([{"metric": "ms", "value": 2.0}], fingerprint="b", **COMMON, context_len=16)
    w.append([{"metric": "ms", "value": 1.0}], fingerprint="c", replace={"model": "m", "context_len": 8},
             **COMMON, context_len=8)
    df = read_results(tmp_path)
    assert sorted(zip(df.context_len, df.metric)) == [(8, "ms"), (16, "ms")]
    assert w.done_fingerprints() == {"b", "c"}


def test_skipped_units_are_not_done(tmp_path):
    w = ResultsWriter(tmp_path)
    w.append([{"metric": "skipped", "value": 1.0}], fingerprint="s", **COMMON)
    w.append([{"metric": "oom", "value": 1.0}], fingerprint="o", **COMMON, context_len=4)
    assert w.done_fingerprints() == {"o"}


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


APPENDER = textwrap.dedent("""
    import sys, time
    from rwkvbench.results import ResultsWriter
    out, who, n, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    w = ResultsWriter(out)
    print("ready", flush=True)
    for i in range(n):
        w.append([{"metric": "ms", "value": float(i)}], model=who, suite="s", task="t", context_len=i,
                 fingerprint=f"{who}-{i}")
        time.sleep(pause)
""")


def _appender(tmp_path, who, n, pause=0.0):
    return subprocess.Popen([sys.executable, "-c", APPENDER, str(tmp_path), who, str(n), str(pause)],
                            stdout=subprocess.PIPE, text=True)


def test_two_processes_appending_lose_no_row(tmp_path):
    procs = [_appender(tmp_path, who, 40) for who in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=240) == 0
    df = read_results(tmp_path)
    assert len(df) == 80 and df.groupby("model").size().to_dict() == {"a": 40, "b": 40}
    assert len(pd.read_csv(tmp_path / "results.csv")) == 80


def test_kill_9_mid_append_leaves_readable_equal_files(tmp_path):
    rng = random.Random(0)
    for trial in range(6):
        p = _appender(tmp_path, f"w{trial}", 20)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.6))
        p.kill()
        p.wait()
        ResultsWriter(tmp_path)  # the next run: repairs what a kill left
        parquet, csv = read_results(tmp_path), pd.read_csv(tmp_path / "results.csv")
        assert len(parquet) == len(csv)
        assert sorted(parquet.fingerprint) == sorted(csv.fingerprint.astype(str))
        assert not list(tmp_path.glob(".*.tmp"))


def test_csv_behind_the_parquet_is_caught_up(tmp_path):
    w = ResultsWriter(tmp_path)
    w.append([{"metric": "a", "value": 1.0}], **COMMON)
    (tmp_path / "results.csv").write_text("stale\n")
    (tmp_path / ".results.parquet.deadbeef.tmp").write_bytes(b"half")
    ResultsWriter(tmp_path)
    assert pd.read_csv(tmp_path / "results.csv").metric.tolist() == ["a"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_empty_parquet_is_recovered_from_the_csv(tmp_path):
    ResultsWriter(tmp_path).append([{"metric": "a", "value": 1.0}, {"metric": "b", "value": 2.0}], **COMMON)
    (tmp_path / "results.parquet").write_bytes(b"")  # what a power loss can leave
    with pytest.warns(UserWarning, match=r"results.parquet is empty \(0 bytes\); recovered 2 rows from results.csv"):
        w = ResultsWriter(tmp_path)
    w.append([{"metric": "c", "value": 3.0}], **COMMON)
    assert sorted(read_results(tmp_path).metric) == ["a", "b", "c"]


def test_corrupt_parquet_and_csv_give_one_line_naming_the_file(tmp_path):
    (tmp_path / "results.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "results.csv").write_bytes(b"\x00\x01")
    with pytest.raises(ResultsError) as e:
        read_results(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "results.parquet") in msg and "nothing to recover" in msg


def test_read_results_merges_every_file_under_a_folder(tmp_path):
    for job in ("0-a", "1-b"):
        ResultsWriter(tmp_path / job).append([{"metric": "acc", "value": 0.5}], **{**COMMON, "model": job})
    assert sorted(read_results(tmp_path).model) == ["0-a", "1-b"]
    assert sorted(read_results(tmp_path / "0-a", tmp_path / "1-b" / "results.parquet").model) == ["0-a", "1-b"]


def test_provenance_line_per_run(tmp_path):
    w = ResultsWriter(tmp_path)
    w.record_run(argv=["x"], versions={"torch": "t"})
    ResultsWriter(tmp_path).record_run(argv=["y"])
    runs = read_runs(tmp_path)
    assert [r["argv"] for r in runs] == [["x"], ["y"]] and runs[0]["run_id"] == w.run_id and runs[0]["git_rev"]
