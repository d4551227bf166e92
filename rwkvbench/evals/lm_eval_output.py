"""lm-eval's own output files for a run of ours: the results JSON (`results_*.json`, what `lm-eval
--output_path` writes) and, when asked, the per-sample log (`samples_<task>_*.jsonl`, `--log_samples`).

They are side files beside results.parquet, built as text here; the runner writes them (a unit returns
`UnitResult(rows, files=...)`), so every tool that reads lm-eval's outputs reads ours.
"""

from __future__ import annotations

import json
import re


def _json(obj, **kwargs) -> str:
    from lm_eval.utils import handle_non_serializable

    return json.dumps(obj, default=handle_non_serializable, ensure_ascii=False, **kwargs)


def results_json(results: dict) -> str:
    """simple_evaluate's results dict as lm-eval writes it (its per-sample log goes to its own file)."""
    return _json({k: v for k, v in results.items() if k != "samples"}, indent=2)


def samples_jsonl(samples: list[dict]) -> str:
    """One task's per-sample log, one JSON object per line, in lm-eval's layout (EvaluationTracker:
    arguments as gen_args_i/arg_j, responses as strings), so `datasets` can load it."""
    from lm_eval.utils import sanitize_list

    lines = []
    for sample in samples:
        sample = dict(sample)
        sample["arguments"] = {f"gen_args_{i}": {f"arg_{j}": a for j, a in enumerate(args)}
                               for i, args in enumerate(sample["arguments"])}
        sample["resps"] = sanitize_list(sample["resps"])
        sample["filtered_resps"] = sanitize_list(sample["filtered_resps"])
        sample["target"] = str(sample["target"])
        lines.append(_json(sample) + "\n")
    return "".join(lines)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name))


def lm_eval_files(results: dict, model: str, task: str, variant: str) -> dict[str, str]:
    """{file name: text} for one task on one model, named as lm-eval names them under its output folder
    (model/results_*.json, model/samples_<task>_*.jsonl): the results JSON, and the samples when logged."""
    folder, stem = f"lm_eval/{_safe(model)}", f"{_safe(task)}_{_safe(variant)}"
    files = {f"{folder}/results_{stem}.json": results_json(results)}
    samples = (results.get("samples") or {}).get(task)
    if samples is not None:
        files[f"{folder}/samples_{stem}.jsonl"] = samples_jsonl(samples)
    return files
