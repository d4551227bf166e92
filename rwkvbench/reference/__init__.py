"""Published zero-shot numbers shipped with the package (sources in README.md beside this file), per-task
metadata for figures (tasks.csv), and the table of our numbers minus the published ones.

Two sources, both kept because they disagree for Pythia: the RWKV paper (arXiv:2305.13048v1, Appendix H,
Tables 3 and 4; no stderr) and EleutherAI's own evaluation files of the final Pythia checkpoints (with
stderr). `load_reference()` gives both as one table with a short `source` label.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
PAPER_FILE = HERE / "rwkv_paper_v1_zero_shot.csv"
PYTHIA_FILE = HERE / "pythia_v1_zero_shot.csv"
TASKS_FILE = HERE / "tasks.csv"
PAPER = "RWKV paper v1"  # short labels for legends and tables
PYTHIA_EVALS = "EleutherAI Pythia evals"
COLUMNS = ["source", "citation", "model", "config", "family", "deduped", "n_params", "task", "metric", "value",
           "stderr"]
# The paper's suite is zero-shot: only our zero-shot rows are compared with it.
ZERO_SHOT = "0-shot"


def _pythia_configs() -> dict[str, str]:
    """EleutherAI model name -> our config name, through each config's hub_id (EleutherAI/pythia-160m)."""
    from rwkvbench.config import load_option, options

    out = {}
    for name in options("model"):
        hub_id = load_option("model", name).get("hub_id")
        if hub_id and str(hub_id).startswith("EleutherAI/"):
            out[str(hub_id).split("/", 1)[1]] = name
    return out


def _nominal_params(name: str) -> float:
    """pythia-1.4b-deduped -> 1.4e9 (the size in EleutherAI's model name)."""
    m = re.search(r"-(\d+(?:\.\d+)?)([mb])", name)
    return float(m.group(1)) * (1e6 if m.group(2) == "m" else 1e9) if m else math.nan


@lru_cache(maxsize=1)
def _load() -> pd.DataFrame:
    paper = pd.read_csv(PAPER_FILE)
    paper = paper.assign(citation=paper.source, source=PAPER, deduped=False, n_params=paper.params_b * 1e9)
    evals = pd.read_csv(PYTHIA_FILE)
    configs = _pythia_configs()
    # Same x position as the paper's row of that model where there is one (the paper gives measured sizes).
    paper_params = paper.dropna(subset=["config"]).groupby("config").n_params.first()
    evals["config"] = evals.model.map(configs.get)
    evals["n_params"] = [paper_params.get(c, _nominal_params(m)) if isinstance(c, str) else _nominal_params(m)
                         for c, m in zip(evals.config, evals.model)]
    evals = evals.assign(citation=evals.source, source=PYTHIA_EVALS)
    df = pd.concat([paper[COLUMNS], evals[COLUMNS]], ignore_index=True)
    df["deduped"] = df.deduped.astype(bool)
    return df


def load_reference() -> pd.DataFrame:
    """Both sources as one table: source (short label), citation (the file's own), model (as published),
    config (ours, or empty), family, deduped, n_params, task, metric, value, stderr (EleutherAI only)."""
    return _load().copy()


@lru_cache(maxsize=1)
def _tasks() -> pd.DataFrame:
    return pd.read_csv(TASKS_FILE).set_index("task")


def task_info(task: str) -> dict:
    """label, paper_metric and chance (None where no fixed choice set) of an lm-eval task."""
    t = _tasks()
    if task not in t.index:
        return {"label": task, "paper_metric": "acc", "chance": None}
    row = t.loc[task]
    chance = None if pd.isna(row.chance) else float(row.chance)
    return {"label": str(row.label), "paper_metric": str(row.paper_metric), "chance": chance}


def task_order(tasks) -> list[str]:
    """The paper's task order first, then the rest alphabetically."""
    known = [t for t in _tasks().index if t in set(tasks)]
    return known + sorted(set(tasks) - set(known))


def coverage() -> dict[str, list[str]]:
    """Our config name -> the sources that publish numbers for it."""
    ref = _load().dropna(subset=["config"])
    return {c: sorted(rows.source.unique()) for c, rows in ref.groupby("config")}


def compare_with_reference(df: pd.DataFrame) -> pd.DataFrame:
    """Our zero-shot quality rows next to every published number for the same model config, task and metric:
    ours, our stderr and n, the published value (and its stderr where the source gives one), and
    ours minus published. `z` is that difference over the combined standard error (ours alone where the
    source publishes none). Empty when no row of ours has a published counterpart."""
    out_cols = ["model", "task", "metric", "variant", "ours", "ours_stderr", "n", "source", "published",
                "published_stderr", "difference", "z"]
    if "checkpoint" in df.columns:
        out_cols.insert(4, "checkpoint")
    if df.empty or not {"suite", "model", "task", "metric", "value"} <= set(df.columns):
        return pd.DataFrame(columns=out_cols)
    variant = df["variant"] if "variant" in df.columns else pd.Series(pd.NA, index=df.index)
    ours = df[(df.suite == "quality") & (variant.isna() | (variant == ZERO_SHOT))].copy()
    ref = _load().dropna(subset=["config"])
    merged = ours.merge(ref[["config", "task", "metric", "source", "value", "stderr"]],
                        left_on=["model", "task", "metric"], right_on=["config", "task", "metric"],
                        suffixes=("", "_pub"))
    if merged.empty:
        return pd.DataFrame(columns=out_cols)
    merged = merged.rename(columns={"value": "ours", "stderr": "ours_stderr", "value_pub": "published",
                                    "stderr_pub": "published_stderr"})
    for col in ("variant", "n", "ours_stderr"):
        if col not in merged.columns:
            merged[col] = pd.NA
    merged["difference"] = merged.ours.astype(float) - merged.published.astype(float)
    se = (merged.ours_stderr.astype(float) ** 2 + merged.published_stderr.astype(float).fillna(0) ** 2) ** 0.5
    merged["z"] = merged.difference / se.where(se > 0)
    return merged[out_cols].sort_values(["task", "metric", "model", "source"]).reset_index(drop=True)
