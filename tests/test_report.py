"""python -m rwkvbench.report: inputs found and merged, pivot tables equal to the rows themselves, run
provenance shown (or its absence said), one clear line for bad input, and the HTML rendered by a real
headless browser with every figure loaded."""

import json
import re
import shutil
import subprocess

import pandas as pd
import pytest
import result_fixtures as fx

from rwkvbench import report
from rwkvbench.errors import UserError

RUN = {"run_id": "20261123-100000-abcdef", "time": "2026-11-23T10:00:00+00:00", "git_rev": "abc1234",
       "argv": ["python", "-m", "rwkvbench", "task=paper_zero_shot", "model=rwkv4_1b5"],
       "config": {"model": {"name": "rwkv4_1b5", "dtype": "fp16"}, "task": {"name": "paper_zero_shot"}},
       "versions": {"python": "3.12.3", "torch": "2.13.0", "cuda": "13.0", "transformers": "5.0.0",
                    "lm_eval": "0.4.13", "rwkvbench": "0.1.0"},
       "device_name": "NVIDIA H200"}


def expected_cells(df: pd.DataFrame, suite: str, table: pd.DataFrame):
    """(row label, column) -> (value, stderr, n) recomputed from the rows with plain pandas."""
    rows = df[df.suite == suite]
    if suite == "train":
        rows = rows[rows.step == rows.groupby(["model", "task", "variant"]).step.transform("max")]
    column = report.columns_of(suite)
    names = list(table.index.names)
    labels = rows[names].astype(object).where(rows[names].notna(), "-")
    return {(tuple(lab), col): (v, se, n) for lab, col, v, se, n in
            zip(labels.itertuples(index=False), rows[column], rows.value, rows.stderr, rows.n)}


@pytest.mark.parametrize("suite", ["quality", "efficiency", "recall", "prompt", "train", "scaling", "kernel"])
def test_pivot_equals_the_rows(suite):
    df = fx.all_rows()
    table = report.pivot(df, suite)
    expected = expected_cells(df, suite, table)
    assert len(expected) == table.xs("value", axis=1, level=1).notna().sum().sum()  # one cell per row, none merged
    for (label, col), (v, se, n) in expected.items():
        cell = table.loc[label]
        assert cell[(col, "value")] == v
        assert (pd.isna(cell[(col, "stderr")]) and pd.isna(se)) or cell[(col, "stderr")] == se
        assert cell[(col, "n")] == n
    # the same numbers as pandas' own pivot of the rows (which must need no aggregation)
    rows = df[df.suite == suite]
    if suite != "train":
        names = list(table.index.names)
        keyed = rows.assign(**{c: rows[c].astype(object).where(rows[c].notna(), "-") for c in names})
        assert not keyed.duplicated(names + [report.columns_of(suite)]).any()
        theirs = keyed.pivot_table(index=names, columns=report.columns_of(suite), values="value", aggfunc="first")
        ours = table.xs("value", axis=1, level=1)[theirs.columns].astype(float)
        pd.testing.assert_frame_equal(ours.sort_index(), theirs.sort_index(), check_names=False,
                                      check_index_type=False, check_column_type=False)


def test_variants_and_dtypes_are_never_averaged():
    df = fx.quality_rows(variants=("0-shot", "5-shot"))
    table = report.pivot(df, "quality")
    assert "variant" in table.index.names
    piqa = table.xs(("piqa", "acc"), level=("task", "metric"))
    assert list(piqa.index) == ["0-shot", "5-shot"]
    assert piqa[("rwkv4_1b5", "value")].nunique() == 2
    eff = fx.efficiency_rows()
    both = pd.concat([eff, eff.assign(dtype="bfloat16", value=eff.value * 1.5)])
    table = report.pivot(both, "efficiency")
    assert "dtype" in table.index.names
    assert table.xs("value", axis=1, level=1).notna().sum().sum() == len(both)


def test_a_variant_that_names_each_models_path_is_listed_not_split():
    eff = fx.efficiency_rows()
    eff["variant"] = eff.model.map({"rwkv4_1b5": "prefill=compiled;decode=fused",
                                    "pythia_1b4": "prefill=sdpa;decode=static_cache"})
    table = report.pivot(eff, "efficiency")
    assert "variant" not in table.index.names
    both = table.xs((1, "prefill_ms"), level=("batch_size", "metric"))
    assert both[("rwkv4_1b5", "value")].notna().all() and both[("pythia_1b4", "value")].notna().any()
    assert report.model_variants(eff, "efficiency") == {"rwkv4_1b5": ["prefill=compiled;decode=fused"],
                                                        "pythia_1b4": ["prefill=sdpa;decode=static_cache"]}
    expected = expected_cells(eff, "efficiency", table)
    assert len(expected) == table.xs("value", axis=1, level=1).notna().sum().sum()
    # two variants of one model at one point are two rows again
    again = pd.concat([eff, eff[eff.model == "rwkv4_1b5"].assign(variant="prefill=eager;decode=compiled")])
    assert "variant" in report.pivot(again, "efficiency").index.names


def test_merge_keeps_the_newest_of_a_repeated_measurement(tmp_path):
    old = fx.quality_rows()
    new = old.assign(time="2026-11-24T10:00:00+00:00", value=old.value + 0.01)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    new.to_parquet(tmp_path / "b" / "results.parquet")
    old.to_csv(tmp_path / "a" / "results.csv", index=False)
    sources = report.collect([tmp_path])
    assert [s.path.name for s in sources] == ["results.csv", "results.parquet"]
    df, dropped = report.merge(sources)
    assert dropped == len(old) and len(df) == len(old)
    assert (df.value.to_numpy() == new.value.to_numpy()).all() or sorted(df.value) == sorted(new.value)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A multirun folder (one job with runs.jsonl, one without) plus a lone Parquet file, reported once."""
    root = tmp_path_factory.mktemp("results")
    job0, job1 = root / "multirun" / "0-paper_zero_shot-rwkv4_1b5", root / "multirun" / "1-efficiency-rwkv4_1b5"
    job0.mkdir(parents=True)
    job1.mkdir(parents=True)
    fx.quality_rows().to_parquet(job0 / "results.parquet")
    fx.quality_rows().to_csv(job0 / "results.csv", index=False)  # the copy beside it is not read twice
    (job0 / "runs.jsonl").write_text(json.dumps(RUN) + "\n" + "{a line cut short by a cra\n")
    fx.efficiency_rows().to_parquet(job1 / "results.parquet")
    fx.kernel_rows().to_parquet(root / "kernel.parquet")
    out = root / "report"
    rc = report.main([str(root / "multirun"), str(root / "kernel.parquet"), "--out", str(out)])
    return root, out, rc


def test_report_files_and_contents(built):
    _, out, rc = built
    assert rc == 0
    html_text = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert pngs == ["efficiency.png", "kernel.png", "quality.png"]
    assert html_text.count('src="data:image/png;base64,') == 3
    assert not re.search(r'(src|href)="(https?:)?//', html_text)  # self-contained: nothing fetched
    for name in pngs:
        assert f"](figures/{name})" in md
    for text in (html_text, md):
        assert "3 results file(s)" in text
        assert "NVIDIA H200" in text and "2.13.0" in text and "0.4.13" in text and "task=paper_zero_shot" in text
        assert "no runs.jsonl beside this file" in text
        assert "RWKV paper v1" in text and "EleutherAI Pythia evals" in text  # ours minus published
        for title in ("Quality (lm-eval)", "Speed and memory", "WKV kernel"):
            assert title in text
    assert '"dtype": "fp16"' in html_text.replace("&quot;", '"')
    assert "0.6856 ± 0.01083" in md or re.search(r"\d\.\d+ ± \d\.\d+ \(n=1,838\)", md)


def test_bad_inputs_are_one_clear_line(tmp_path, capsys):
    assert report.main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing: no such file or folder" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no results.parquet or results.csv in this folder or below it"):
        report.collect([tmp_path / "empty"])
    bad = tmp_path / "results.parquet"
    bad.write_bytes(b"")
    with pytest.raises(UserError, match=r"results.parquet: empty \(0 bytes\)"):
        report.collect([bad])
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match=r"x.csv: no column 'suite'"):
        report.collect([tmp_path / "x.csv"])


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


# Run in the page after it loads: how many images, and how many did not decode.
IMAGE_CHECK = """<script>window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  document.body.dataset.images = imgs.length;
  document.body.dataset.broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
});</script>"""


@pytest.mark.skipif(_chromium() is None, reason="no Chromium on PATH: .ci/run installs Debian's `chromium` "
                                                "(apt-get install -y --no-install-recommends chromium)")
def test_report_renders_in_headless_chromium(built, tmp_path):
    _, out, _ = built
    page = tmp_path / "report.html"
    page.write_text((out / "report.html").read_text().replace("</body>", IMAGE_CHECK + "</body>"))
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", done.stdout)
    assert body, done.stdout[:500]
    attrs = dict(re.findall(r'data-(\w+)="(\d+)"', body.group(1)))
    assert attrs == {"images": "3", "broken": "0"}, (attrs, done.stderr[-2000:])


def test_published_readme_headline_names_the_gpu(tmp_path):
    """benchmarks/publish_readme.py: the README's headline block from what results/ holds."""
    import importlib.util
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("publish_readme", repo / "benchmarks" / "publish_readme.py")
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    results = tmp_path / "results"
    results.mkdir()
    (results / "README.md").write_text((repo / "results" / "README.md").read_text())
    (tmp_path / "README.md").write_text(f"# project\n\n{publish.START}\nold\n{publish.END}\n\n## Quick start\n")
    publish.main(str(results))
    assert "nothing published yet" in (results / "README.md").read_text()
    folder = results / "efficiency_1b5"
    folder.mkdir()
    fx.efficiency_rows().to_csv(folder / "results.csv", index=False)
    (folder / "efficiency.png").write_bytes(b"\x89PNG")
    publish.main(str(results))
    text = (results / "README.md").read_text()
    assert "![Prefill, decode per token" in text and "(efficiency_1b5/efficiency.png)" in text
    assert "Measured on NVIDIA H200; float16; random weights." in text
    assert "| rwkv4_1b5 |" in text and "| 256K |" in text  # Pythia's first out-of-memory context
    project = (tmp_path / "README.md").read_text()  # the project's README: same block, links into results/
    assert "(results/efficiency_1b5/efficiency.png)" in project and "old" not in project
    assert project.endswith("## Quick start\n") and "Measured on NVIDIA H200" in project
    assert text.count(publish.START) == 1 and "## Files" in text  # only the block changed
