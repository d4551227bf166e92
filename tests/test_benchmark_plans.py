"""benchmarks/train_throughput.py plans every setting it defines (a new one was once left out of the
plan, and a device call measured nothing for it)."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import train_throughput  # noqa: E402


def test_every_setting_is_planned_and_the_ladders_comes_first_at_every_size():
    args = argparse.Namespace(families=["rwkv4", "neox"], sizes=["s1", "s3", "s7"])
    jobs = train_throughput.plan(args)
    assert {setting for _, setting in jobs} == set(train_throughput.SETTINGS)
    first = jobs[: len(args.sizes)]
    assert [s for s, _ in first] == args.sizes
    assert {setting for _, setting in first} == {"graphs"}  # conf/train's compile_mode: reduce-overhead
    assert len(jobs) == len(set(jobs))


def test_families_alternate_by_round_and_the_median_round_is_the_step_time(monkeypatch):
    import torch

    calls, ms = [], {"rwkv4": iter([10.0, 30.0, 11.0]), "neox": iter([12.0, 12.5, 99.0])}

    def fake_round(family, size, setting, args):
        calls.append(family)
        if family == "big":
            raise torch.OutOfMemoryError("no room")
        if family == "bad":
            raise RuntimeError("compile failed")
        return {"step_ms": next(ms[family]), "first_steps_s": 1.0, "peak_mem_gib": 2.0, "kind": family,
                "n_layer": 1, "n_embd": 8, "params_nonembedding": 10, "params_total": 20, "batch_size": 4,
                "micro_batch_size": 4, "flops_per_token": 1e6}

    monkeypatch.setattr(train_throughput, "_round", fake_round)
    args = argparse.Namespace(rounds=3, context=16, tokens=None, peak_tflops=1.0, device="cpu")
    rows = {r["family"]: r for r in train_throughput.measure(["rwkv4", "neox", "big", "bad"], "s1", "graphs", args)}
    # a family that failed is not retried, and the others keep their rounds
    assert calls == ["rwkv4", "neox", "big", "bad", "neox", "rwkv4", "rwkv4", "neox"]
    assert rows["big"]["note"] == "oom in round 1" and "tokens_per_s" not in rows["big"]
    assert rows["bad"]["note"] == "round 1: RuntimeError: compile failed"
    assert (rows["rwkv4"]["step_ms"], rows["rwkv4"]["step_ms_min"], rows["rwkv4"]["step_ms_max"]) == (11.0, 10.0, 30.0)
    assert rows["neox"]["step_ms"] == 12.5 and rows["neox"]["tokens_per_s"] == 4 * 16 / 12.5e-3

    tidy, common = train_throughput.tidy_rows(rows["rwkv4"], argparse.Namespace(tokens=None, device="cpu", context=16,
                                                                                steps=10))
    assert common["suite"] == "train_throughput" and common["model"] == "rwkv4_s1"
    assert common["variant"] == "setting=graphs;tokens=random"
    by_metric = {r["metric"]: r for r in tidy}
    assert by_metric["step_ms"]["value"] == 11.0 and by_metric["step_ms"]["n"] == 3  # rounds
    assert by_metric["peak_mem_gib"]["n"] == 1  # the first round's
    tidy, _ = train_throughput.tidy_rows(rows["big"], argparse.Namespace(tokens=None, device="cpu", context=16, steps=10))
    assert tidy == [{"metric": "oom", "value": 1.0}]
    tidy, _ = train_throughput.tidy_rows(rows["bad"], argparse.Namespace(tokens=None, device="cpu", context=16, steps=10))
    assert tidy == []  # failed otherwise: printed with its note, no rows
