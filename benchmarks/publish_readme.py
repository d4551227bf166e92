"""Rewrite the headline block of results/README.md, and of the project's README.md beside the results
folder, from what is published there: each folder's headline figure, captioned with the GPU, dtype and
weights its rows name, and the efficiency numbers at a glance.

    python benchmarks/publish_readme.py results

Only the text between the two headline markers changes; a folder that is not published yet is left out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from rwkvbench.plots.style import binary_bytes, tokens, weights
from rwkvbench.report import read_file

START, END = "<!-- headline:start -->", "<!-- headline:end -->"
# folder, figure, what it shows
HEADLINES = [
    ("efficiency_1b5", "efficiency.png", "Prefill, decode per token, peak memory and state versus context: RWKV-4 "
                                         "against Pythia, both at the 1.5B shape"),
    ("kernel", "kernel.png", "Our WKV kernel against the rwkv package's, and the memory-traffic floor"),
    ("ladder", "train.png", "Loss versus compute of the trained ladder, with the fitted power laws"),
    # trained weights say something about the families; the random-weight runs (recall/, prompt/) only
    # that the probes run to 1M tokens
    ("recall_trained", "recall_copy.png", "Copying text back as the context grows: the ladder's largest pair, "
                                          "trained at 1024 tokens"),
    ("prompt_trained", "prompt.png", "Accuracy spread across prompt templates: the ladder's largest pair"),
    ("recall", "recall_passkey.png", "Passkey retrieval as the context grows (random weights: the probe runs to 1M)"),
]


def setup(df: pd.DataFrame) -> str:
    gpu = sorted(df.device_name.dropna().unique()) if "device_name" in df.columns else []
    gpu = gpu or sorted(df.device.dropna().unique())
    dtypes = sorted(df.dtype.dropna().unique()) if "dtype" in df.columns else []
    w = weights(df)
    parts = [", ".join(gpu) or "device not recorded"] + ([", ".join(dtypes)] if dtypes else [])
    if w != "unknown":
        parts.append(f"{w} weights")
    return "; ".join(parts)


def efficiency_glance(df: pd.DataFrame) -> list[str]:
    """Per model at batch 1: prefill and decode at 16K and at the longest context measured, peak memory
    there, and the first context that ran out of memory."""
    b1 = df[(df.suite == "efficiency") & (df.batch_size == 1)]
    if b1.empty:
        return []
    lines = ["Batch 1:", "",
             "| model | prefill 16K | decode / token at 16K | longest context | prefill there | "
             "decode there | peak memory there | first OOM |", "|---|---|---|---|---|---|---|---|"]
    for model, m in b1.groupby("model", sort=False):
        def at(metric, ctx, m=m):
            v = m[(m.metric == metric) & (m.context_len == ctx)].value
            return float(v.iloc[0]) if len(v) else None

        measured = m[m.metric == "prefill_ms"].context_len.dropna()
        longest = int(measured.max()) if len(measured) else None
        oom = m[m.metric == "oom"].dropna(subset=["context_len"]).sort_values("context_len")
        # an OOM the budget predicted (and so never ran) says so
        first_oom = "none" if oom.empty else tokens(oom.context_len.iloc[0]) + (
            " (predicted)" if str(oom.note.iloc[0]).startswith("predicted") else "")
        ms = lambda v: "" if v is None else (f"{v / 1e3:.2f} s" if v >= 1e3 else f"{v:.3g} ms")  # noqa: E731
        peak = at("prefill_peak_bytes", longest) if longest else None
        lines.append(f"| {model} | {ms(at('prefill_ms', 16384))} | {ms(at('decode_ms_per_token', 16384))} | "
                     f"{tokens(longest) if longest else ''} | {ms(at('prefill_ms', longest))} | "
                     f"{ms(at('decode_ms_per_token', longest))} | {binary_bytes(peak) if peak else ''} | "
                     f"{first_oom} |")
    return lines


def headline(results: Path, prefix: str = "") -> list[str]:
    """The block's lines; figure links relative to the README they go in (`prefix` + folder/figure)."""
    out = []
    for folder, figure, what in HEADLINES:
        csv, png = results / folder / "results.csv", results / folder / figure
        if not (csv.is_file() and png.is_file()):
            continue
        df = read_file(csv)
        out += [f"![{what}]({prefix}{folder}/{figure})", "", f"*{what}. Measured on {setup(df)}.*", ""]
        if folder == "efficiency_1b5":
            out += efficiency_glance(df) + [""]
    return out or ["(nothing published yet: run `benchmarks/publish_results.sh` on a GPU)", ""]


def rewrite(readme: Path, lines: list[str], required: bool) -> None:
    text = readme.read_text() if readme.is_file() else ""
    if START not in text or END not in text:
        if required:
            sys.exit(f"{readme}: no {START} ... {END} block to rewrite")
        return
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + START + "\n" + "\n".join(lines) + END + tail)
    print(f"[publish] headline block of {readme} rewritten")


def main(results: str) -> None:
    results = Path(results)
    rewrite(results / "README.md", headline(results), required=True)
    # the project's README, when the results folder sits in a checkout whose README has the block
    rewrite(results.resolve().parent / "README.md", headline(results, prefix=f"{results.resolve().name}/"),
            required=False)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results")
