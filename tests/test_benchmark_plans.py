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
    assert {setting for _, _, setting in jobs} == set(train_throughput.SETTINGS)
    first = jobs[: len(args.sizes) * len(args.families)]
    assert {(f, s) for f, s, _ in first} == {(f, s) for f in args.families for s in args.sizes}
    assert {setting for _, _, setting in first} == {"compiled"}
    assert len(jobs) == len(set(jobs))
