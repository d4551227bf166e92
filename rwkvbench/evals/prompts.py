"""Prompt sensitivity: one task under many prompt templates (conf/prompts/<set>.yaml), the spread of
accuracy that results, and question-first against passage-first (the RWKV paper, Appendix J: an RNN
cannot look back, so it needs the question before the passage).

One unit of work per (set, template): lm-eval scores the template's task through our adapter. Rows
(suite `prompt`, task = the set, variant = the template): every task metric with lm-eval's stderr and n,
plus the adapter's token counts; each document's correctness goes beside the results
(`prompt_sensitivity/<model>/<set>/<template>.<fingerprint>.csv`) for the summary.

After every model of a run is measured, the summary adds (variant `summary`), per set and model: the
mean, std (ddof=1), min, max and range of acc (and acc_norm) across templates, and the paired difference
question-first minus passage-first (per pair: variant `summary:<pair>`; pooled over pairs: `summary`)
with a bootstrap CI over documents; and per set, with model `rwkv-vs-transformer`, RWKV's spread minus
the Transformer's (`acc_std_diff`, `acc_range_diff`) and RWKV's order effect minus the Transformer's
(`acc_qfirst_minus_pfirst_diff`), each with a paired bootstrap CI over documents (the templates are
fixed; the documents are the sample). Seeded throughout.
"""

from __future__ import annotations

import logging
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from rwkvbench.errors import ConfigError
from rwkvbench.evals import register, register_summary
from rwkvbench.evals.prompt_templates import (PromptSet, base_config, check_renders, documents, load_set,
                                              rendered_requests, task_config)
from rwkvbench.evals.lm_eval_output import results_json
from rwkvbench.evals.quality import _Session, file_sha256, rows_from_results
from rwkvbench.units import Unit, UnitResult, model_identity

SUITE = "prompt"
SUMMARY = "summary"
DUMP = "rendered_prompts"
SUMMARIZED = ("acc", "acc_norm")
BOTH = "rwkv-vs-transformer"
MODEL_COLUMNS = ["model", "family", "n_params", "dtype", "device", "device_name", "checkpoint"]


# ---- configuration -----------------------------------------------------------------------------------
def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def prompt_sets(task) -> list[PromptSet]:
    """The run's prompt sets, validated, with the user's templates (prompt_dir, extra_templates) in."""
    names = _plain(task.get("sets"))
    names = [names] if isinstance(names, str) else list(names or [])
    if not names:
        raise ConfigError("task.base: name at least one prompt set (e.g. task.base=piqa)")
    extra = _plain(task.get("extra_templates")) or {}
    stray = [s for s in extra if s not in names]
    if stray:
        raise ConfigError(f"extra_templates.{stray[0]}: {stray[0]!r} is not among this run's prompt sets "
                          f"({', '.join(names)})")
    return [load_set(name, task.get("prompt_dir"), extra.get(name)) for name in names]


def selected(task, sets: list[PromptSet]) -> dict[str, list[str]]:
    """set -> the template names this run measures (task.templates: only these; null: all)."""
    only = _plain(task.get("templates"))
    if only is None:
        return {s.name: list(s.templates) for s in sets}
    only = [only] if isinstance(only, str) else list(only)
    known = {t for s in sets for t in s.templates}
    unknown = [t for t in only if t not in known]
    if unknown:
        raise ConfigError(f"templates: {unknown[0]!r} is in none of {', '.join(s.name for s in sets)}; "
                          f"valid: {', '.join(sorted(known))}")
    return {s.name: [t for t in s.templates if t in only] for s in sets}


def doc_limit(task) -> int | None:
    """limit= when given, else the suite's default_limit (null: every document)."""
    limit = task.get("limit")
    return task.get("default_limit") if limit is None else limit


def docs_file(model: str, set_name: str, template: str, fingerprint: str) -> str:
    """Where a unit's per-document correctness lives, relative to the results folder."""
    return f"prompt_sensitivity/{model}/{set_name}/{template}.{fingerprint}.csv"


# ---- units ---------------------------------------------------------------------------------------------
def evaluate(lm, manager, config: dict, limit, shots: int, seed: int, iters: int) -> dict:
    """lm-eval's `evaluate` on one task config, seeded as `simple_evaluate` seeds it, without the
    environment report simple_evaluate adds (seconds of subprocesses, per template)."""
    import random

    import torch
    from lm_eval.evaluator import evaluate as lm_eval_evaluate

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    loaded = manager.load([config])
    for task in loaded["tasks"].values():
        task.set_config(key="num_fewshot", value=shots)
        task.set_fewshot_seed(seed=seed)
    return lm_eval_evaluate(lm=lm, task_dict=loaded, limit=limit, bootstrap_iters=iters, log_samples=True,
                            verbosity="WARNING")


def measure(session: _Session, config: dict, metrics: list[str], limit, shots: int, seed: int, iters: int,
            per_doc_path: str, budget=None) -> UnitResult:
    lm, manager = session.get()
    before = dict(lm.stats)
    results = evaluate(lm, manager, config, limit, shots, seed, iters)
    name = config["task"]
    rows = rows_from_results(results, name)
    rows += [{"metric": k, "value": lm.stats[k] - before[k], "n": 1}
             for k in ("tokens_computed", "prefix_tokens_saved")]
    per_doc = pd.DataFrame([{"doc_id": s["doc_id"], **{m: float(s[m]) for m in metrics if m in s}}
                            for s in results["samples"][name]]).sort_values("doc_id")
    return UnitResult(rows, files={per_doc_path: per_doc.to_csv(index=False),
                                   f"lm_eval/{session.model.name}/{name}.json": results_json(results)})


def dump(pset: PromptSet, configs: dict[str, dict], n: int, budget=None) -> UnitResult:
    """Every template's requests for the first `n` documents, as lm-eval sends them, in one text file."""
    lines = [f"# prompt set {pset.name} ({pset.origin}): each request is context + [[continuation]]"]
    for name, config in configs.items():
        t = pset.templates[name]
        lines.append(f"\n==== template {name}" + (f" ({t.order}, pair {t.pair})" if t.pair else "")
                     + (f": {t.note}" if t.note else ""))
        for r in rendered_requests(config, limit=n):
            lines += [f"---- document {r.doc_id}, request {r.index} (target {r.gold!r})",
                      f"{r.context}[[{r.continuation}]]", f"repr: {r.context!r} + {r.continuation!r}"]
    return UnitResult([{"metric": "documents_dumped", "value": float(n), "n": len(configs)}],
                      files={f"prompt_sensitivity/prompts/{pset.name}.txt": "\n".join(lines) + "\n"})


def _data_identity(base: dict) -> dict:
    if "custom_dataset" in base:
        return {"corpus": file_sha256(base["dataset_kwargs"]["path"])}
    return {split: file_sha256(path) for split, path in base["dataset_kwargs"]["data_files"].items()}


def data_plan(task) -> list[tuple[PromptSet, dict, dict[str, dict]]]:
    """(set, base config, {template: config}) for every set of the part, its documents read and every
    chosen template rendered on a few of them: run by validation before any model loads, and by units()."""
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    sets = prompt_sets(task)
    chosen = selected(task, sets)
    data_files = _plain(task.get("data_files")) or {}
    plan = []
    for pset in sets:
        base = base_config(pset, task.get("data_dir"), data_files)
        docs = documents(pset, base)
        configs = {t: task_config(pset, pset.templates[t], base) for t in chosen[pset.name]}
        for t, config in configs.items():
            check_renders(pset, config, docs, f"{pset.origin}: template {t!r}")
        plan.append((pset, base, configs))
    return plan


@register("prompt_sensitivity", keys=("sets", "templates", "extra_templates", "prompt_dir", "data_dir", "data_files",
                                      "limit", "default_limit", "num_fewshot", "seed", "ci", "ci_resamples",
                                      "bootstrap_iters", "dump_prompts", "batch_size"))
def units(model, task) -> list[Unit]:
    limit, shots = doc_limit(task), int(task.get("num_fewshot") or 0)
    seed, iters = int(task.get("seed", 1234)), int(task.get("bootstrap_iters", 1000))
    plan = data_plan(task)
    identity = model_identity(model)
    session = _Session(model, task, {})
    batch = session.get_batch_size()
    out = []
    for pset, base, configs in plan:
        common = {"set": {"task": pset.task, "fields": pset.fields, "source": pset.source},
                  "data": _data_identity(base), "limit": limit, "num_fewshot": shots, "seed": seed,
                  "bootstrap_iters": iters}
        for t, config in configs.items():
            unit = Unit(key={"suite": SUITE, "task": pset.name, "variant": t, "batch_size": batch},
                        params={**common, "template": pset.templates[t].prompt}, label=f"{pset.name}/{t}",
                        measure=None)  # set below: its per-document file is named by the unit's fingerprint
            path = docs_file(model.name, pset.name, t, unit.fingerprint(identity))
            unit.measure = partial(measure, session, config, pset.metrics, limit, shots, seed, iters, path)
            out.append(unit)
        n_dump = int(task.get("dump_prompts") or 0)
        if n_dump > 0:
            out.append(Unit(key={"suite": SUITE, "task": pset.name, "variant": DUMP},
                            params={"documents": n_dump, "data": common["data"], "set": common["set"],
                                    "templates": {t: pset.templates[t].prompt for t in configs}},
                            label=f"{pset.name}/{DUMP}",
                            measure=partial(dump, pset, configs, n_dump)))
    return out


# ---- statistics ----------------------------------------------------------------------------------------
def spread(values) -> dict[str, float]:
    """Across templates: mean, std (ddof=1; 0 for one template), min, max, range."""
    v = np.asarray(values, dtype=float)
    return {"mean": v.mean(), "std": v.std(ddof=1) if len(v) > 1 else 0.0, "min": v.min(), "max": v.max(),
            "range": v.max() - v.min()}


def bootstrap(statistic, arrays: list[np.ndarray], resamples: int, seed: int, ci: float) -> tuple[float, float, float]:
    """Resample documents (axis 0 of every array, the same rows for all: paired) with replacement;
    `statistic` takes the resampled arrays with a leading resample axis and returns one value per
    resample. Returns (standard error, CI low, CI high), percentile intervals."""
    rng = np.random.default_rng(seed)
    n = len(arrays[0])
    width = max(int(np.prod(arrays[0].shape[1:])), 1) * len(arrays)
    chunk = max(1, 4_000_000 // (n * width))
    values = []
    for lo in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - lo), n))
        values.append(statistic(*(a[idx] for a in arrays)))
    values = np.concatenate(values)
    low, high = np.quantile(values, [(1 - ci) / 2, (1 + ci) / 2])
    return float(values.std(ddof=1)), float(low), float(high)


def _doc_mean(x: np.ndarray) -> np.ndarray:  # (resamples, docs) -> mean over documents
    return x.mean(axis=1)


def _template_means(x: np.ndarray) -> np.ndarray:  # (resamples, docs, templates) -> (resamples, templates)
    return x.mean(axis=1)


def _std_difference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _template_means(x).std(axis=-1, ddof=1) - _template_means(y).std(axis=-1, ddof=1)


def _range_difference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.ptp(_template_means(x), axis=-1) - np.ptp(_template_means(y), axis=-1)


def _mean_difference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _doc_mean(x) - _doc_mean(y)


# ---- summary ---------------------------------------------------------------------------------------------
def _doc_table(out_dir: Path, rows: pd.DataFrame, metric: str) -> pd.DataFrame | None:
    """documents x templates of one model's per-document `metric`, from the files its units saved
    (None when a file is missing: the summary then gives point values without intervals)."""
    columns = {}
    for variant, fingerprint in rows.groupby("variant").fingerprint.first().items():
        path = out_dir / docs_file(rows.model.iloc[0], rows.task.iloc[0], variant, fingerprint)
        if not path.is_file():
            warnings.warn(f"rwkvbench: {path} is missing: no bootstrap intervals for {rows.model.iloc[0]} "
                          f"{rows.task.iloc[0]}", stacklevel=2)
            return None
        frame = pd.read_csv(path, index_col="doc_id")
        if metric not in frame:
            return None
        columns[variant] = frame[metric]
    return pd.DataFrame(columns).dropna()


def _pair_differences(table: pd.DataFrame, pairs: dict[str, dict[str, str]]) -> dict[str, pd.Series]:
    """pair -> per-document correctness question-first minus passage-first, for pairs measured whole."""
    return {pair: table[o["question_first"]] - table[o["passage_first"]] for pair, o in pairs.items()
            if {o["question_first"], o["passage_first"]} <= set(table.columns)}


def _order_effect(table: pd.DataFrame, pset: PromptSet) -> pd.Series | None:
    """Per document, question-first minus passage-first averaged over the set's pairs (None: no pair)."""
    diffs = _pair_differences(table, pset.pairs())
    return pd.DataFrame(diffs).mean(axis=1) if diffs else None


def _with_ci(metric: str, value: float, ci: tuple | None, n: int | None, **common) -> list[dict]:
    rows = [{**common, "metric": metric, "value": float(value), "stderr": ci[0] if ci else None, "n": n}]
    if ci:
        rows += [{**common, "metric": f"{metric}_ci_low", "value": ci[1], "n": n},
                 {**common, "metric": f"{metric}_ci_high", "value": ci[2], "n": n}]
    return rows


def _model_summary(rows: pd.DataFrame, table: pd.DataFrame | None, pset: PromptSet, metric: str,
                   boot: dict, common: dict) -> list[dict]:
    """One model's spread across templates, and its question-first minus passage-first per pair and pooled."""
    out = [{**common, "metric": f"{metric}_{k}", "value": float(v), "n": len(rows)}
           for k, v in spread(rows.value).items()]
    if table is None:
        return out
    effect = f"{metric}_qfirst_minus_pfirst"
    for pair, d in _pair_differences(table, pset.pairs()).items():
        ci = bootstrap(_doc_mean, [d.to_numpy()], **boot)
        out += _with_ci(effect, d.mean(), ci, len(d), **{**common, "variant": f"{SUMMARY}:{pair}"})
    pooled = _order_effect(table, pset)
    if pooled is not None:
        out += _with_ci(effect, pooled.mean(), bootstrap(_doc_mean, [pooled.to_numpy()], **boot), len(pooled), **common)
    return out


def _family_rows(a: dict, b: dict, pset: PromptSet, metric: str, boot: dict, where: dict) -> list[dict]:
    """Model a (RWKV) minus model b (Transformer) over the templates both measured: spread (std, range) and
    the order effect, with intervals from the same resampled documents for both (paired)."""
    names = sorted(set(a["values"].index) & set(b["values"].index))
    if len(names) < 2:
        return []
    va, vb = spread(a["values"][names]), spread(b["values"][names])
    ta, tb = a["table"], b["table"]
    docs = ta.index.intersection(tb.index) if ta is not None and tb is not None else []
    if len(docs) < 2:  # no per-document files: point values only
        return (_with_ci(f"{metric}_std_diff", va["std"] - vb["std"], None, None, **where)
                + _with_ci(f"{metric}_range_diff", va["range"] - vb["range"], None, None, **where))
    ta, tb = ta.loc[docs], tb.loc[docs]
    x = [ta[names].to_numpy(), tb[names].to_numpy()]
    n = len(docs)
    out = (_with_ci(f"{metric}_std_diff", va["std"] - vb["std"], bootstrap(_std_difference, x, **boot), n, **where)
           + _with_ci(f"{metric}_range_diff", va["range"] - vb["range"], bootstrap(_range_difference, x, **boot), n,
                      **where))
    ea, eb = _order_effect(ta, pset), _order_effect(tb, pset)
    if ea is not None and eb is not None and list(ea.index) == list(eb.index):
        ci = bootstrap(_mean_difference, [ea.to_numpy(), eb.to_numpy()], **boot)
        out += _with_ci(f"{metric}_qfirst_minus_pfirst_diff", ea.mean() - eb.mean(), ci, n, **where)
    return out


def _family_summary(models: dict, pset: PromptSet, metric: str, boot: dict, common: dict) -> list[dict]:
    """RWKV minus Transformer, for every (RWKV, Transformer) pair measured in one place (dtype, device)."""
    rwkv = [m for m in models.values() if m["ident"]["family"] == "rwkv"]
    tf = [m for m in models.values() if m["ident"]["family"] == "transformer"]
    out = []
    for a in rwkv:
        for b in tf:
            ma, mb = a["ident"]["model"], b["ident"]["model"]
            variant = SUMMARY if len(rwkv) == len(tf) == 1 else f"{SUMMARY}:{ma}|{mb}"
            # the pair's weights in the key column `checkpoint`: another pair's comparison (another run folder
            # merged into one report) is another measurement, not a duplicate of this one
            pair = f"{ma} ({a['ident']['checkpoint']}) minus {mb} ({b['ident']['checkpoint']})"
            out += _family_rows(a, b, pset, metric, boot, {**common, "variant": variant, "note": f"{ma} minus {mb}",
                                                           "checkpoint": pair})
    return out


@register_summary("prompt_sensitivity")
def summarize(results: pd.DataFrame, out_dir, task) -> list[dict]:
    out_dir = Path(out_dir)
    sets = prompt_sets(task)
    chosen = selected(task, sets)
    boot = {"resamples": int(task.get("ci_resamples", 2000)), "seed": int(task.get("seed", 1234)),
            "ci": float(task.get("ci", 0.95))}
    df = results[results.suite.eq(SUITE).fillna(False) & results.metric.isin(SUMMARIZED) & results.value.notna()]
    out = []
    for pset in sets:
        rows = df[df.task.eq(pset.name).fillna(False) & df.variant.isin(chosen[pset.name])]
        for metric, by_metric in rows.groupby("metric"):
            models = {}
            for key, g in by_metric.groupby(MODEL_COLUMNS, dropna=False):
                ident = {c: (None if pd.isna(v) else v) for c, v in zip(MODEL_COLUMNS, key)}
                common = {**ident, "suite": SUITE, "task": pset.name, "variant": SUMMARY}
                table = _doc_table(out_dir, g, metric)
                out += _model_summary(g, table, pset, metric, boot, common)
                models[key] = {"ident": ident, "values": g.set_index("variant").value, "table": table}
            for place, group in _by_place(models).items():
                common = {"model": BOTH, "family": "both", "suite": SUITE, "task": pset.name,
                          **dict(zip(("dtype", "device", "device_name"), place))}
                out += _family_summary(group, pset, metric, boot, common)
    return out


def _by_place(models: dict) -> dict[tuple, dict]:
    """Models grouped by (dtype, device, device_name): a family comparison is made within one place."""
    out: dict[tuple, dict] = {}
    for key, m in models.items():
        place = tuple(m["ident"][c] for c in ("dtype", "device", "device_name"))
        out.setdefault(place, {})[key] = m
    return out
