"""The tidy result schema (DESIGN.md) and an append-only, atomic Parquet (+CSV) writer.

One row per measured number. A unit of work (one task on one model at one setting) is appended as soon
as it finishes, so an interrupted sweep loses nothing, and a rerun into the same folder can skip units
already present (`ResultsWriter.has`) or replace them (rows with the same key keep the newest).
"""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
import uuid
from pathlib import Path

import pandas as pd

COLUMNS = ["run_id", "time", "git_rev", "model", "family", "n_params", "dtype", "device", "suite", "task",
           "variant", "context_len", "batch_size", "metric", "value", "stderr", "n"]
# What identifies one measurement; a rerun replaces rows with the same key.
KEY = ["model", "dtype", "device", "suite", "task", "variant", "context_len", "batch_size", "metric"]
_DTYPES = {"n_params": "Int64", "context_len": "Int64", "batch_size": "Int64", "n": "Int64",
           "value": "float64", "stderr": "float64"}
PARQUET = "results.parquet"


def git_rev() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def tidy(rows: list[dict], **common) -> pd.DataFrame:
    """Rows (each with at least `metric` and `value`) as a frame in the schema; missing columns are null."""
    df = pd.DataFrame([{**common, **r} for r in rows])
    unknown = set(df.columns) - set(COLUMNS)
    if unknown:
        raise ValueError(f"result rows have columns outside the schema: {sorted(unknown)}")
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    df = df[COLUMNS]
    for col, dt in _DTYPES.items():
        df[col] = pd.to_numeric(df[col], errors="raise").astype(dt)
    for col in set(COLUMNS) - set(_DTYPES):
        df[col] = df[col].astype("string")
    return df


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the newest row for each measurement key."""
    return df.drop_duplicates(subset=KEY, keep="last").reset_index(drop=True)


def read_results(path) -> pd.DataFrame:
    """A results folder or Parquet file, de-duplicated."""
    path = Path(path)
    if path.is_dir():
        path = path / PARQUET
    if not path.exists():
        return tidy([])
    return dedupe(pd.read_parquet(path))


def _atomic_write(df: pd.DataFrame, path: Path, writer) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    writer(df, tmp)
    os.replace(tmp, path)


class ResultsWriter:
    def __init__(self, out_dir, run_id: str | None = None):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / PARQUET
        self.run_id = run_id or _dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.git_rev = git_rev()

    def append(self, rows: list[dict], **common) -> pd.DataFrame:
        """Add one finished unit of work; rewrites the files atomically (temp file + rename)."""
        if not rows:
            return self.read()
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        new = tidy(rows, run_id=self.run_id, time=now, git_rev=self.git_rev, **common)
        old = self.read()
        df = dedupe(pd.concat([old, new], ignore_index=True) if len(old) else new)
        _atomic_write(df, self.path, lambda d, p: d.to_parquet(p, index=False))
        _atomic_write(df, self.path.with_suffix(".csv"), lambda d, p: d.to_csv(p, index=False))
        return df

    def read(self) -> pd.DataFrame:
        return read_results(self.path)

    def has(self, **match) -> bool:
        """Whether rows matching every given column already exist (to skip finished units on resume)."""
        df = self.read()
        for col, val in match.items():
            df = df[df[col].astype("string") == str(val)]
        return len(df) > 0
