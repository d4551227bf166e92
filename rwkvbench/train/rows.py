"""Training rows in the tidy schema, and reading them back as one table per evaluation point.

A training row is keyed by the run's model name (`rwkv4_s3`), its variant (the learning rate, `lr=0.002`)
and the step (the results schema's `step` column).
"""

from __future__ import annotations

import pandas as pd

from rwkvbench import results

SUITE = "train"


def training_table(df: pd.DataFrame) -> pd.DataFrame:
    """suite=train rows as one row per (model, tag, step) with one column per metric, plus family,
    n_params, task, context_len, batch_size."""
    df = df[df.suite == SUITE].copy()
    if df.empty:
        return pd.DataFrame(columns=["model", "family", "tag", "step"])
    df["tag"] = df.variant.astype(str)
    df["step"] = df["step"].astype("int64")
    index = ["model", "family", "tag", "step"]
    table = df.pivot_table(index=index, columns="metric", values="value", aggfunc="last").reset_index()
    table.columns.name = None
    return table.sort_values(index).reset_index(drop=True)


def finished_runs(df: pd.DataFrame) -> set[tuple[str, str]]:
    """(model, tag) of every run that wrote its `finished` row."""
    table = training_table(df)
    if "finished" not in table:
        return set()
    done = table[table.finished == 1.0]
    return set(zip(done.model, done.tag))


def merge_into(writer, sources) -> pd.DataFrame:
    """Rows of other results folders or Parquet files (e.g. one per family, from separate GPU calls) added
    to the writer's folder as they are (their own run ids and times), newest row per key kept."""
    import os
    import uuid

    frames = [writer.read()] + [results.read_results(s) for s in sources]
    frames = [f for f in frames if len(f)]
    if not frames:
        return writer.read()
    df = results.dedupe(pd.concat(frames, ignore_index=True))
    for path, write in [(writer.path, lambda d, p: d.to_parquet(p, index=False)),
                        (writer.path.with_suffix(".csv"), lambda d, p: d.to_csv(p, index=False))]:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        write(df, tmp)
        os.replace(tmp, path)
    return df
