"""Units of work: what an evaluator describes, and the one place that runs them.

An evaluator is a function (model, task config) -> iterable of `Unit`. A unit names its measurement (`key`:
suite, task, variant, context_len, batch_size), says what else changes its numbers (`params`: limit, data
hash, seed, template, ...), and knows how to make its rows (`measure`). `run_units` is the only code that
decides, per unit, whether to skip it (an identical unit is already in the results: same model identity,
key and params, i.e. the same fingerprint), run it, or mark it `skipped` (the run's time is up); it turns
an out-of-memory error into an `oom` row, never writes a non-finite number as if it were one, and appends
each finished unit's rows at once, so an interrupted sweep loses nothing already measured.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm

from rwkvbench.results import done_fingerprints

# Environment switches that change which code path measures (and so the numbers).
PATH_ENV = ("RWKVBENCH_WKV", "RWKVBENCH_DECODE")
STATUS_METRICS = ("oom", "skipped")
# Columns of the model and the unit key that say which earlier rows a unit's new rows replace.
REPLACE_COLUMNS = ("model", "dtype", "device", "device_name", "checkpoint", "suite", "task", "variant",
                   "context_len", "batch_size")


class SkipUnit(Exception):
    """Raised by `measure` when a unit cannot run here (beyond a device's limit, predicted over budget or
    over memory). The message becomes the status row's note; `metric` is "skipped", or "oom" for a point
    predicted not to fit in memory."""

    def __init__(self, reason: str, metric: str = "skipped"):
        super().__init__(reason)
        self.metric = metric


@dataclass
class UnitResult:
    """Rows plus side files the runner saves in the results folder (e.g. lm-eval's results JSON)."""

    rows: list[dict]
    files: dict[str, str | bytes] = field(default_factory=dict)


class Budget:
    """Time a unit may take: its own allowance (`seconds`) and what is left of the run's (`deadline`, a
    time.monotonic() value). Measurements check `remaining()` and do fewer repeats when it runs low."""

    def __init__(self, seconds: float | None = None, deadline: float | None = None):
        self.start = time.monotonic()
        ends = [t for t in (None if seconds is None else self.start + seconds, deadline) if t is not None]
        self.end = min(ends) if ends else math.inf
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0


@dataclass
class Unit:
    key: dict
    measure: Callable[[Budget], "list[dict] | UnitResult"]
    params: dict = field(default_factory=dict)
    label: str = ""
    seconds: float | None = None  # this unit's own time allowance (None: only the run's deadline)
    # Called with the stored rows of a unit kept from an earlier run, so that an evaluator which learns
    # from earlier points (a sweep's time and memory trend) learns from kept ones too.
    kept: Callable[[list[dict]], None] | None = None
    # Every rank measures it together (lm-eval shards its requests itself under torchrun); rank 0 writes
    # its rows. Other units are shared out among the ranks whole.
    collective: bool = False

    def fingerprint(self, identity: dict) -> str:
        """A hash of everything that determines this unit's numbers."""
        blob = json.dumps({"model": identity, "key": self.key, "params": self.params}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def model_identity(model) -> dict:
    """What identifies the model and the code path it runs: its result columns plus path switches."""
    return {**model.describe(), **{k: os.environ.get(k, "auto") for k in PATH_ENV}}


def for_device(value, device):
    """A config value given once, or per device type ({cpu: 4096, cuda: null})."""
    if hasattr(value, "keys"):
        return value.get(torch.device(device).type)
    return value


def status_row(metric: str, note: str) -> dict:
    return {"metric": metric, "value": 1.0, "n": 1, "note": note}


def _finite_rows(rows: list[dict], label: str) -> list[dict]:
    """A non-finite value is written as null with a note (and a warning), never as a plain number."""
    out = []
    for r in rows:
        v = r.get("value")
        if isinstance(v, (int, float)) and not math.isfinite(v):
            warnings.warn(f"rwkvbench: {label}: metric {r.get('metric')} came out {v}; written as null", stacklevel=2)
            r = {**r, "value": None, "stderr": None, "note": f"non-finite value ({v})"}
        out.append(r)
    return out


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


def _free(device) -> None:
    """Give a unit's memory back to the device before the next unit (on CPU the allocator does)."""
    if getattr(device, "type", None) == "cuda":
        gc.collect()  # tensors held in reference cycles (a caught OOM's frames) hold device memory
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def run_units(model, units: Iterable[Unit], writer, *, max_minutes: float | None = None, rank: int = 0,
              world_size: int = 1, desc: str = "") -> dict:
    """Run each unit not already in `writer`'s results (this rank's share when sharded). Returns counts:
    {"ran", "reused", "skipped", "oom"}."""
    identity = model_identity(model)
    common = model.describe()
    deadline = None if max_minutes is None else time.monotonic() + 60 * float(max_minutes)
    units = list(units)
    counts = {"ran": 0, "reused": 0, "skipped": 0, "oom": 0}
    bar = tqdm(total=len(units), desc=desc or model.name, leave=False, dynamic_ncols=True, disable=rank != 0)
    shared = 0  # units shared out whole so far: the i-th goes to rank i % world_size
    for unit in units:
        bar.update(1)
        together = unit.collective and world_size > 1
        if not together:
            shared += 1
            if (shared - 1) % world_size != rank:
                continue
        fp = unit.fingerprint(identity)
        stored = writer.read()  # read per unit: other writers (ranks, runs) may have added rows meanwhile
        done = fp in done_fingerprints(stored)
        out_of_time = deadline is not None and time.monotonic() >= deadline
        if together:  # rank 0 decides for all, or ranks that disagree would wait on each other forever
            from rwkvbench import distributed

            done, out_of_time = distributed.broadcast_object((done, out_of_time))
        if done:
            counts["reused"] += 1
            if unit.kept is not None:
                unit.kept(stored[stored.fingerprint == fp].to_dict("records"))
            continue
        bar.set_postfix_str(unit.label or "", refresh=True)
        files: dict = {}
        if out_of_time:
            rows = [status_row("skipped", f"the run's max_minutes={max_minutes} was used up before this unit")]
        else:
            budget = Budget(unit.seconds, deadline)
            try:
                out = unit.measure(budget)
                rows, files = (out.rows, out.files) if isinstance(out, UnitResult) else (out, {})
                rows = _finite_rows(rows, f"{model.name} {unit.label or unit.key}")
            except SkipUnit as e:
                rows = [status_row(e.metric, str(e))]
            except Exception as e:  # noqa: BLE001  (only out-of-memory becomes a row; anything else is a bug)
                if not is_oom(e):
                    raise
                rows = [status_row("oom", str(e).strip().splitlines()[0][:300])]
            _free(model.device)
        status = next((r["metric"] for r in rows if r.get("metric") in STATUS_METRICS), "ran")
        counts[status] += 1
        if together and rank != 0:
            continue  # rank 0 has every rank's numbers (lm-eval gathers them) and writes them
        # The unit's rows replace whatever an earlier run left for the same model and unit key.
        owned = {k: v for k, v in {**common, **unit.key}.items() if k in REPLACE_COLUMNS and v is not None}
        writer.append(rows, files=files, replace=owned, **{**common, **unit.key, "fingerprint": fp})
    bar.close()
    return counts
