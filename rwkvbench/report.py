"""One report from any number of results: `python -m rwkvbench.report RESULTS... [--out DIR]`.

RESULTS are run folders, multirun folders (every results file below them), or results files (Parquet or
the tidy CSV beside it). They are merged (a measurement present in several files: the newest row kept)
into a self-contained HTML page (figures embedded as data URIs, no external resource) and a Markdown
twin with the PNGs beside it:

    DIR/report.html   DIR/report.md   DIR/figures/*.png

The report holds every applicable figure, our numbers minus the published ones, pivot tables of every
metric (value ± standard error, n; one column per model; rows never averaged), and for each results file
the runs that wrote it: configuration, command line, git revision, GPU and package versions (from the
`runs.jsonl` beside it, where the run recorded one).
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import html
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rwkvbench.errors import UserError

RESULT_FILES = ("results.parquet", "results.csv")
# Candidate row labels of a pivot table, in display order; a column becomes a label when it varies.
INDEX = ["task", "variant", "context_len", "batch_size", "step", "metric"]
ALWAYS = ["task", "metric"]
# Added, in order, only when two rows would otherwise share one cell (never average them).
DISAMBIGUATE = ["dtype", "device_name", "device", "checkpoint", "fingerprint", "run_id", "time"]
METRIC_COLUMNS = ("train", "train_throughput", "scaling")
SUITE_ORDER = ["quality", "recall", "prompt", "efficiency", "kernel", "train", "train_throughput", "scaling"]
SUITE_TITLES = {"quality": "Quality (lm-eval)", "recall": "Recall probes", "prompt": "Prompt templates",
                "efficiency": "Speed and memory", "kernel": "WKV kernel", "train": "Training (each run's last step)",
                "train_throughput": "Training step throughput (both families timed in alternating rounds)",
                "scaling": "Scaling-law fits", "perplexity": "Perplexity", "wall_time": "Wall time of whole tasks"}
TABLES_NOTE = ("Each cell: value ± standard error, and n. One column per model (training runs and fits: per "
               "metric), one row per measured setting; nothing averaged.")
CAPTIONS = {
    "quality": "Accuracy per task versus parameter count; filled markers are this run's models, hollow ones the "
               "published numbers (RWKV paper v1, Appendix H; EleutherAI's Pythia evaluations).",
    "efficiency": "Prefill latency, decode latency per token, peak memory and state size versus context length. "
                  "Markers at a panel's top edge: no measurement (out of memory, or skipped: predicted over the "
                  "time or memory budget).",
    "recall": "Recall probe score versus context length, probe parameters and the bytes of state the model held.",
    "prompt": "Accuracy across prompt templates, and question-first minus passage-first with its confidence interval.",
    "train": "Training and validation loss versus training compute, with each family's fitted power law.",
    "kernel": "WKV kernel time versus sequence length against the memory-traffic floor, ours and the rwkv package's.",
}


# ---- reading ------------------------------------------------------------------------------------------------
@dataclass
class Source:
    path: Path
    rows: pd.DataFrame
    runs: list[dict] = field(default_factory=list)
    runs_note: str = ""


def read_file(path: Path) -> pd.DataFrame:
    """One results file in the schema: a Parquet file as the writer reads it (recovered from its CSV if
    damaged), or a tidy CSV (what results/ publishes)."""
    from rwkvbench.results import conform, dedupe, read_results

    if path.suffix == ".parquet":
        return read_results(path)
    if path.suffix != ".csv":
        raise UserError(f"{path}: expected a results folder, a .parquet or a .csv results file")
    try:
        df = pd.read_csv(path, dtype="string")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable CSV results file ({(str(e).splitlines() or [''])[0]})") from None
    for col in ("suite", "metric", "value"):
        if col not in df.columns:
            raise UserError(f"{path}: no column {col!r}; expected tidy results rows (rwkvbench.results)")
    try:
        return dedupe(conform(df))
    except ValueError as e:
        raise UserError(f"{path}: a numeric column holds text ({str(e).splitlines()[0]})") from None


def read_runs(folder: Path) -> tuple[list[dict], str]:
    """The run records beside a results file, and a note when there are none."""
    from rwkvbench.results import RUNS
    from rwkvbench.results import read_runs as read_run_lines

    if not (folder / RUNS).is_file():
        return [], f"no {RUNS} beside this file: configuration and versions were not recorded"
    return read_run_lines(folder / RUNS), ""


def find_results(path: Path) -> list[Path]:
    """The results files a path names: itself, the folder's own, or every one below a (multirun) folder.
    Where a folder holds both, the Parquet file is read (the CSV is its copy)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"{path}: no such file or folder")
    for name in RESULT_FILES:
        if (path / name).is_file():
            return [path / name]
    found = {}
    for name in reversed(RESULT_FILES):  # Parquet overrides a CSV in the same folder
        for p in sorted(path.rglob(name)):
            found[p.parent] = p
    if not found:
        raise UserError(f"{path}: no {' or '.join(RESULT_FILES)} in this folder or below it")
    return [found[k] for k in sorted(found)]


def collect(paths) -> list[Source]:
    sources = []
    for given in paths:
        for file in find_results(Path(given)):
            runs, note = read_runs(file.parent)
            sources.append(Source(file, read_file(file), runs, note))
    return sources


def merge(sources: list[Source]) -> tuple[pd.DataFrame, int]:
    """All rows, and how many were dropped as the same measurement found in more than one file (the newest,
    by `time`, is kept)."""
    frames = [s.rows for s in sources if len(s.rows)]
    if not frames:
        return pd.DataFrame(columns=["suite", "metric", "value"]), 0
    from rwkvbench.results import dedupe

    df = pd.concat(frames, ignore_index=True).sort_values("time", kind="stable", na_position="first")
    merged = dedupe(df)
    return merged, len(df) - len(merged)


# ---- tables -------------------------------------------------------------------------------------------------
def _suite_rows(df: pd.DataFrame, suite: str) -> pd.DataFrame:
    rows = df[df.suite == suite]
    if suite == "train" and "step" in rows.columns and rows.step.notna().any():
        last = rows.groupby(["model", "task", "variant"], dropna=False).step.transform("max")
        rows = rows[rows.step == last]
    return rows


def columns_of(suite: str) -> str:
    """What a suite's table has one column per: the model, or (one run per model: training, fits) the metric."""
    return "metric" if suite in METRIC_COLUMNS else "model"


def pivot_index(rows: pd.DataFrame, columns: str = "model") -> list[str]:
    """The row labels of a suite's table: the candidate columns that vary (task and metric, or model, always),
    plus what it takes for no two rows to share a cell."""
    candidates = INDEX if columns == "model" else ["task", "model"] + [c for c in INDEX if c not in ("task", "metric")]
    always = ALWAYS if columns == "model" else ["task", "model"]
    index = [c for c in candidates if c in rows.columns and (c in always or rows[c].nunique(dropna=False) > 1
                                                              or (c in ("variant", "step") and rows[c].notna().any()))]
    if columns == "model" and "variant" in index and is_model_path(rows, [c for c in index if c != "variant"]):
        index.remove("variant")
    for extra in DISAMBIGUATE:
        if not rows.duplicated(index + [columns]).any():
            break
        if extra in rows.columns and rows[extra].nunique(dropna=False) > 1:
            index.append(extra)
    return index


def is_model_path(rows: pd.DataFrame, index: list[str]) -> bool:
    """Whether `variant` only names the path each model took (an efficiency point's prefill / decode
    label): without it no model has two rows in one table row, yet models differ in it. Such variants are
    listed under the table (`model_variants`) rather than splitting its rows model by model."""
    keyed = rows.assign(**{c: rows[c].astype(object).where(rows[c].notna(), "-") for c in index})
    if keyed.duplicated(index + ["model"]).any():
        return False
    return bool((keyed.groupby(index, dropna=False).variant.nunique(dropna=False) > 1).any())


def model_variants(df: pd.DataFrame, suite: str) -> dict[str, list[str]]:
    """model -> the variants (paths) it ran in a suite whose table leaves variant out, else {}."""
    table = pivot(df, suite)
    rows = _suite_rows(df, suite)
    if table.empty or "variant" in table.index.names or columns_of(suite) != "model" or rows.variant.isna().all():
        return {}
    return {m: sorted(r.variant.dropna().unique()) for m, r in rows.groupby("model", sort=False)}


def pivot(df: pd.DataFrame, suite: str) -> pd.DataFrame:
    """One suite as a table: a row per (task, variant, context, batch, step, metric, ...), per model three
    columns (value, stderr, n); for training runs and fits a row per run and a column per metric. Cells
    are the measured rows themselves: nothing is aggregated."""
    rows = _suite_rows(df, suite).copy()
    if rows.empty:
        return pd.DataFrame()
    for col in ("stderr", "n", "family", "n_params"):
        if col not in rows.columns:
            rows[col] = pd.NA
    columns = columns_of(suite)
    index = pivot_index(rows, columns)
    rows[index] = rows[index].astype(object).where(rows[index].notna(), "-")
    rows = rows.drop_duplicates(index + [columns], keep="last")  # only exact repeats are left by now
    table = rows.pivot(index=index, columns=columns, values=["value", "stderr", "n"]).swaplevel(0, 1, axis=1)
    if columns == "model":
        from rwkvbench.plots.style import model_order

        names = model_order(rows)
    else:
        names = list(dict.fromkeys(rows.metric))
    table = table.reindex(columns=pd.MultiIndex.from_product([names, ["value", "stderr", "n"]]))
    return table.sort_index()


def suites(df: pd.DataFrame) -> list[str]:
    present = [s for s in df.suite.dropna().unique()]
    return [s for s in SUITE_ORDER if s in present] + sorted(set(present) - set(SUITE_ORDER))


def number(v, metric: str = "") -> str:
    if v is None or pd.isna(v):
        return ""
    v = float(v)
    if "bytes" in metric and "per_s" not in metric:
        from rwkvbench.plots.style import binary_bytes

        return binary_bytes(v)
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e15):
        return f"{v:.3e}"
    if abs(v) >= 1e4:
        return f"{v:,.0f}"
    return str(int(v)) if v.is_integer() else f"{v:.4g}"


def _cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """Header, row labels and cell texts ('value ± stderr', 'n=...') of a pivot table (a column per model or
    per metric)."""
    index_names = list(table.index.names)
    columns = list(dict.fromkeys(table.columns.get_level_values(0)))
    labels, cells = [], []
    for key, row in table.iterrows():
        key = key if isinstance(key, tuple) else (key,)
        metric = str(dict(zip(index_names, key)).get("metric", ""))
        labels.append([str(k) for k in key])
        out = []
        for m in columns:
            if "metric" not in index_names:  # one column per metric
                metric = str(m)
            v, se, n = row[(m, "value")], row[(m, "stderr")], row[(m, "n")]
            text = number(v, metric)
            if text and pd.notna(se):
                text += f" ± {number(se, metric)}"
            out.append((text, "" if pd.isna(n) or not text else f"n={int(n):,}"))
        cells.append(out)
    return index_names + columns, labels, cells


# ---- rendering ----------------------------------------------------------------------------------------------
def _figure_caption(name: str) -> str:
    return CAPTIONS.get(name) or CAPTIONS.get(name.split("_", 1)[0], "")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _html_table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _comparison_rows(comp: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = ["model", "task", "metric", "ours ± stderr", "n", "source", "published", "ours − published", "z"]
    rows = []
    for r in comp.itertuples(index=False):
        ours = number(r.ours) + (f" ± {number(r.ours_stderr)}" if pd.notna(r.ours_stderr) else "")
        pub = number(r.published) + (f" ± {number(r.published_stderr)}" if pd.notna(r.published_stderr) else "")
        rows.append([r.model, r.task, r.metric, ours, "" if pd.isna(r.n) else f"{int(r.n):,}", r.source, pub,
                     f"{r.difference:+.4g}", "" if pd.isna(r.z) else f"{r.z:+.1f}"])
    return header, rows


def _paths_note(df: pd.DataFrame, suite: str) -> str:
    paths = model_variants(df, suite)
    if not paths:
        return ""
    return "Variant (the path each model ran): " + "  ·  ".join(f"{m}: {', '.join(v)}" for m, v in paths.items())


def _run_rows(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    versions = sorted({k for r in runs for k in (r.get("versions") or {})})
    header = ["run_id", "time", "git_rev", "device_name", "command line"] + versions
    rows = []
    for r in runs:
        argv = r.get("argv")
        argv = " ".join(map(str, argv)) if isinstance(argv, list) else str(argv or "")
        v = r.get("versions") or {}
        rows.append([str(r.get(k, "") or "") for k in ("run_id", "time", "git_rev", "device_name")] + [argv]
                    + [str(v.get(k, "")) for k in versions])
    return header, rows


@dataclass
class Report:
    df: pd.DataFrame
    sources: list[Source]
    duplicates: int
    figures: dict  # name -> PNG bytes
    title: str = "rwkvbench report"


def build(paths, title: str = "rwkvbench report") -> Report:
    from rwkvbench.plots import make_figures
    from rwkvbench.plots.style import pyplot

    sources = collect(paths)
    df, dropped = merge(sources)
    plt = pyplot()
    figures = {}
    for name, fig in make_figures(df).items():
        figures[name] = _png(fig)
        plt.close(fig)
    return Report(df, sources, dropped, figures, title)


def _intro(rep: Report) -> list[str]:
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Generated {when} from {len(rep.sources)} results file(s), {len(rep.df):,} rows."]
    if rep.duplicates:
        lines.append(f"{rep.duplicates} row(s) measured in more than one file: the newest of each was kept.")
    return lines


def render_html(rep: Report) -> str:
    from rwkvbench.reference import compare_with_reference

    parts = [f"<h1>{html.escape(rep.title)}</h1>"] + [f"<p class=meta>{html.escape(x)}</p>" for x in _intro(rep)]
    toc = ['<a href="#figures">Figures</a>', '<a href="#published">Against the published numbers</a>',
           '<a href="#tables">Tables</a>', '<a href="#runs">Runs and versions</a>']
    parts.append("<nav>" + " · ".join(toc) + "</nav>")
    parts.append('<h2 id="figures">Figures</h2>')
    if not rep.figures:
        parts.append("<p>No suite in these results has a figure.</p>")
    for name, png in rep.figures.items():
        data = base64.b64encode(png).decode()
        caption = f"<b>{html.escape(name)}</b>: {html.escape(_figure_caption(name))}"
        parts.append(f'<figure id="fig-{name}"><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{caption}</figcaption></figure>")
    parts.append('<h2 id="published">Against the published numbers</h2>')
    comp = compare_with_reference(rep.df)
    if comp.empty:
        parts.append("<p>No zero-shot quality row of a model with published numbers (the RWKV-4 and Pythia "
                     "configs) in these results.</p>")
    else:
        parts.append("<p>Ours minus published, per source; z is that difference over the combined standard "
                     "error (ours alone where the source gives none).</p>")
        header, rows = _comparison_rows(comp)
        parts.append(_html_table(header, [[html.escape(str(c)) for c in r] for r in rows]))
    parts.append(f'<h2 id="tables">Tables</h2><p>{html.escape(TABLES_NOTE)}</p>')
    for suite in suites(rep.df):
        table = pivot(rep.df, suite)
        if table.empty:
            continue
        header, labels, cells = _cells(table)
        rows = [[html.escape(x) for x in lab] + [f"{html.escape(t)} <span class=n>{html.escape(n)}</span>"
                                                 for t, n in row] for lab, row in zip(labels, cells)]
        parts.append(f"<h3>{html.escape(SUITE_TITLES.get(suite, suite))}</h3>" + _html_table(header, rows, "pivot"))
        paths = _paths_note(rep.df, suite)
        if paths:
            parts.append(f"<p class=meta>{html.escape(paths)}</p>")
    parts.append('<h2 id="runs">Runs and versions</h2>')
    for src in rep.sources:
        parts.append(f"<h3><code>{html.escape(str(src.path))}</code></h3><p>{len(src.rows):,} rows"
                     + (f"; {html.escape(src.runs_note)}" if src.runs_note else "") + "</p>")
        if src.runs:
            header, rows = _run_rows(src.runs)
            parts.append(_html_table(header, [[html.escape(c) for c in r] for r in rows]))
            for r in src.runs:
                cfg = json.dumps(r.get("config", {}), indent=2, sort_keys=True, default=str)
                parts.append(f"<details><summary>configuration of run {html.escape(str(r.get('run_id', '')))}"
                             f"</summary><pre>{html.escape(cfg)}</pre></details>")
    return HTML_PAGE.format(title=html.escape(rep.title), body="\n".join(parts))


def render_markdown(rep: Report, figure_dir: str = "figures") -> str:
    from rwkvbench.reference import compare_with_reference

    out = [f"# {rep.title}", ""] + _intro(rep) + ["", "## Figures", ""]
    for name in rep.figures:
        out += [f"![{name}]({figure_dir}/{name}.png)", "", f"**{name}**: {_figure_caption(name)}", ""]
    out += ["## Against the published numbers", ""]
    comp = compare_with_reference(rep.df)
    if comp.empty:
        out += ["No zero-shot quality row of a model with published numbers in these results.", ""]
    else:
        out += ["Ours minus published, per source; z is that difference over the combined standard error.", "",
                _md_table(*_comparison_rows(comp)), ""]
    out += ["## Tables", "", TABLES_NOTE, ""]
    for suite in suites(rep.df):
        table = pivot(rep.df, suite)
        if table.empty:
            continue
        header, labels, cells = _cells(table)
        rows = [lab + [f"{t} ({n})" if n else t for t, n in row] for lab, row in zip(labels, cells)]
        out += [f"### {SUITE_TITLES.get(suite, suite)}", "", _md_table(header, rows), ""]
        paths = _paths_note(rep.df, suite)
        if paths:
            out += [paths, ""]
    out += ["## Runs and versions", ""]
    for src in rep.sources:
        note = f"; {src.runs_note}" if src.runs_note else ""
        out += [f"### `{src.path}`", "", f"{len(src.rows):,} rows{note}", ""]
        if src.runs:
            out += [_md_table(*_run_rows(src.runs)), ""]
            for r in src.runs:
                cfg = json.dumps(r.get("config", {}), indent=2, sort_keys=True, default=str)
                out += [f"<details><summary>configuration of run {r.get('run_id', '')}</summary>", "", "```json", cfg,
                        "```", "", "</details>", ""]
    return "\n".join(out)


def write(rep: Report, out_dir) -> dict[str, Path]:
    """report.html, report.md and figures/*.png in out_dir; the paths."""
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for name, png in rep.figures.items():
        (out / "figures" / f"{name}.png").write_bytes(png)
    paths = {"html": out / "report.html", "markdown": out / "report.md"}
    paths["html"].write_text(render_html(rep), encoding="utf-8")
    paths["markdown"].write_text(render_markdown(rep), encoding="utf-8")
    return paths


HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1500px;
       padding: 0 1rem; color: #222; line-height: 1.45; }}
h1 {{ margin-bottom: .2rem; }} h2 {{ border-bottom: 1px solid #ddd; margin-top: 2.2rem; }}
.meta {{ color: #555; margin: .2rem 0; }} nav {{ margin: 1rem 0; }}
figure {{ margin: 1.5rem 0; }} figure img {{ max-width: 100%; height: auto; border: 1px solid #eee; }}
figcaption {{ color: #444; font-size: .92rem; }}
.scroll {{ overflow-x: auto; }}
table {{ border-collapse: collapse; font-size: .85rem; margin: .5rem 0 1.2rem; }}
th, td {{ border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; white-space: nowrap; }}
th {{ background: #f4f4f4; position: sticky; top: 0; }}
table.pivot td {{ font-variant-numeric: tabular-nums; }}
.n {{ color: #888; font-size: .78rem; }}
pre {{ background: #f7f7f7; padding: .6rem; overflow-x: auto; font-size: .8rem; }}
</style></head>
<body>
{body}
</body></html>
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rwkvbench.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="run folders, multirun folders, results.parquet or results.csv files")
    ap.add_argument("--out", default="report", help="folder for report.html, report.md and figures/ (default: report)")
    ap.add_argument("--title", default="rwkvbench report")
    args = ap.parse_args(argv)
    try:
        rep = build(args.results, args.title)
        paths = write(rep, args.out)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[rwkvbench] report: {paths['html']} (and {paths['markdown'].name}, {len(rep.figures)} figure(s) in "
          f"{paths['markdown'].parent / 'figures'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
