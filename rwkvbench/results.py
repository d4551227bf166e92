"""The tidy result schema (DESIGN.md) and an append-only, atomic, multi-process-safe writer.

One row per measured number. A unit of work is appended as soon as it finishes (rwkvbench/units.py), so
an interrupted sweep loses nothing. Any number of processes may write into one folder: every append is a
read-merge-write of `results.parquet` under a file lock (`filelock`), written to a temporary file, fsynced
and renamed over the old one; `results.csv` is regenerated from the Parquet after it (and at every
writer's start, should a kill have left it behind). Rows with the same KEY keep the newest.
`runs.jsonl` beside them holds one line of provenance per run (versions, command line, git revision).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import uuid
import warnings
from functools import lru_cache
from pathlib import Path

import pandas as pd
from filelock import FileLock

from rwkvbench.errors import UserError

COLUMNS = ["run_id", "time", "git_rev", "model", "family", "n_params", "dtype", "device", "suite", "task",
           "variant", "context_len", "batch_size", "metric", "value", "stderr", "n",
           # provenance and status, added later (columns are added, never renamed)
           "device_name", "checkpoint", "fingerprint", "note", "step"]
# What identifies one measurement; a rerun replaces rows with the same key.
KEY = ["model", "dtype", "device", "device_name", "checkpoint", "suite", "task", "variant", "context_len",
       "batch_size", "metric", "step"]
_DTYPES = {"n_params": "Int64", "context_len": "Int64", "batch_size": "Int64", "n": "Int64", "step": "Int64",
           "value": "float64", "stderr": "float64"}
PARQUET = "results.parquet"
CSV = "results.csv"
RUNS = "runs.jsonl"
LOCK = ".results.lock"


class ResultsError(UserError):
    """A results file that cannot be read; the message names it and says how to recover."""


def git_rev() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        rev = out.stdout.strip()
        if not rev:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@lru_cache(maxsize=None)
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def tidy(rows: list[dict], **common) -> pd.DataFrame:
    """Rows (each with at least `metric` and `value`) as a frame in the schema; missing columns are null."""
    df = pd.DataFrame([{**common, **r} for r in rows])
    unknown = set(df.columns) - set(COLUMNS)
    if unknown:
        raise ValueError(f"result rows have columns outside the schema: {sorted(unknown)}")
    return conform(df)


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Every schema column present (null where a file predates it), in order, with the schema's dtypes."""
    df = df.copy()
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


def _read_parquet(path: Path) -> pd.DataFrame:
    """One results file; an empty or corrupt one is recovered from the CSV beside it where that can be
    read (with one warning line), else a ResultsError names it."""
    try:
        return conform(pd.read_parquet(path))
    except Exception as e:  # noqa: BLE001  (pyarrow raises several types for a damaged file)
        reason = "empty (0 bytes)" if path.stat().st_size == 0 else f"unreadable ({type(e).__name__})"
    csv = path.with_name(CSV)
    try:
        df = pd.read_csv(csv, dtype="string")
        if not {"model", "metric", "value"} <= set(df.columns):
            raise ValueError("not a results CSV")
        df = conform(df)
    except Exception:  # noqa: BLE001
        raise ResultsError(f"{path}: {reason}, and {csv.name} beside it cannot be read either; nothing to recover: "
                           f"move the folder's results files aside to start afresh") from None
    warnings.warn(f"rwkvbench: {path} is {reason}; recovered {len(df)} rows from {csv.name} "
                  f"(the next writer rewrites the Parquet)", stacklevel=3)
    return df


def results_files(path) -> list[Path]:
    """A results.parquet, or every results.parquet under a folder (a run or a multirun sweep)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if (path / PARQUET).is_file():
        return [path / PARQUET]
    return sorted(path.rglob(PARQUET)) if path.is_dir() else []


def read_results(*paths) -> pd.DataFrame:
    """Results from run folders, multirun folders or Parquet files, merged and de-duplicated."""
    frames = [_read_parquet(f) for p in paths for f in results_files(p)]
    frames = [f for f in frames if len(f)]
    return dedupe(pd.concat(frames, ignore_index=True)) if frames else tidy([])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """write(tmp_path), fsync it, rename it over `path`, fsync the folder: a crash leaves the old file or
    the new one, never a part."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _write_frame(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
    atomic_write(path.with_name(CSV), lambda tmp: df.to_csv(tmp, index=False))


def done_fingerprints(df: pd.DataFrame) -> set[str]:
    """Fingerprints of the units whose rows `df` holds, less `skipped` ones (they run again)."""
    if df.empty:
        return set()
    skipped = set(df.fingerprint[df.metric == "skipped"].dropna())
    return set(df.fingerprint.dropna()) - skipped


class ResultsWriter:
    def __init__(self, out_dir, run_id: str | None = None):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / PARQUET
        self.run_id = run_id or _dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.git_rev = git_rev()
        self.lock = FileLock(str(self.dir / LOCK))
        with self.lock:
            self._repair()

    def _repair(self) -> None:
        """Under the lock: temp files of writers that died are removed (no live writer has one outside
        the lock), a Parquet recovered from the CSV is written back, and the CSV caught up with it."""
        for stale in self.dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        if self.path.exists():
            _write_frame(_read_parquet(self.path), self.path)

    def append(self, rows: list[dict], files: dict | None = None, replace: dict | None = None,
               **common) -> pd.DataFrame:
        """Add one finished unit of work (and its side files); atomic, and safe with other writers.
        `replace`: column values whose earlier rows the new ones supersede (a unit re-measured)."""
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        new = tidy(rows, run_id=self.run_id, time=now, git_rev=self.git_rev, **common) if rows else None
        with self.lock:
            for name, content in (files or {}).items():
                self._save_file(name, content)
            old = self.read()
            if new is None:
                return old
            if replace and len(old):
                stale = pd.Series(True, index=old.index)
                for col, val in replace.items():
                    stale &= old[col].astype("string").fillna("") == str(val)
                old = old[~stale]
            df = dedupe(pd.concat([old, new], ignore_index=True) if len(old) else new)
            _write_frame(df, self.path)
        return df

    def _save_file(self, name: str, content: str | bytes) -> None:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode("utf-8") if isinstance(content, str) else content
        atomic_write(path, lambda tmp: tmp.write_bytes(data))

    def read(self) -> pd.DataFrame:
        return _read_parquet(self.path) if self.path.exists() else tidy([])

    def done_fingerprints(self) -> set[str]:
        """Fingerprints of units already measured here (a `skipped` unit is not done: it runs again)."""
        return done_fingerprints(self.read())

    def record_run(self, **info) -> None:
        """One line of provenance for this run in runs.jsonl."""
        line = json.dumps({"run_id": self.run_id, "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                           "git_rev": self.git_rev, **info}, default=str, sort_keys=False)
        with self.lock:
            with open(self.dir / RUNS, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())


def read_runs(*paths) -> list[dict]:
    """The provenance lines of every run under the given folders."""
    out = []
    for p in paths:
        p = Path(p)
        files = [p] if p.is_file() and p.name == RUNS else sorted((p if p.is_dir() else p.parent).rglob(RUNS))
        for f in files:
            for line in f.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        continue  # a line cut short by a crash
    return out


def versions() -> dict:
    """Versions of what produced the numbers."""
    import importlib.metadata as md

    import torch

    out = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
           "platform": platform.platform()}
    for pkg in ("rwkvbench", "transformers", "lm_eval", "hydra-core", "pandas", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out
