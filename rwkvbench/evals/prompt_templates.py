"""Prompt templates as data: per task, a set of named templates in `conf/prompts/<set>.yaml`.

A template is a handful of lm-eval task fields (`doc_to_text`, `doc_to_choice`, `doc_to_target`,
`target_delimiter`, `fewshot_delimiter`, `description`; Jinja over the document's raw fields, as in
lm-eval's own task YAML), laid over the lm-eval task config of the set's task. A set file:

    task: piqa              # the lm-eval task (lm_eval_tasks.BUILTIN) whose data file, layout and metrics it uses
    fields: piqa            # prompt_docs processor: the local layout -> lm-eval's raw fields
    shared: {...}           # template fields every template starts from
    templates:
      default: {doc_to_text: "Question: {{goal}}\\nAnswer:"}     # lm-eval's own prompt, verbatim
      labeled_qfirst: {doc_to_text: ..., order: question_first, pair: labeled, note: ...}

or, for generated documents, `source: {generator: readcomp, file: ..., <parameters>}` and `metrics:`
instead of `task:` and `fields:`. `include: other_set` starts from another set's file. Templates that
differ only in whether the question comes before or after the passage carry `order`
(question_first | passage_first) and a shared `pair` name, so the pairing is data.

A user's own templates come from config alone: a folder (`prompt_dir=`) of `<set>.yaml` files whose
templates are added to the shipped set's (same name: that template's keys updated), or inline
(`extra_templates.<set>.<name>.doc_to_text=...`).
"""

from __future__ import annotations

import ast
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import yaml

from rwkvbench.config import conf_dir
from rwkvbench.errors import ConfigError, DataError
from rwkvbench.evals import readcomp
from rwkvbench.evals.lm_eval_tasks import BUILTIN, LAYOUTS, resolve_task
from rwkvbench.evals.prompt_docs import FIELDS, process_docs, to_fields

PROMPT_KEYS = ("doc_to_text", "doc_to_choice", "doc_to_target", "target_delimiter", "fewshot_delimiter", "description")
META_KEYS = ("order", "pair", "note")
SET_KEYS = ("include", "note", "task", "fields", "source", "metrics", "shared", "templates")
ORDERS = ("question_first", "passage_first")
RESERVED = ("summary", "rendered_prompts")  # variants the suite's own rows use
NAME = re.compile(r"^[A-Za-z0-9_]+$")
# Generated document sources: name -> lm-eval `custom_dataset` (called with the source's parameters).
GENERATORS = {"readcomp": readcomp.dataset}


@dataclass(frozen=True)
class Template:
    name: str
    prompt: dict  # the lm-eval task fields it sets (shared ones included)
    order: str | None = None
    pair: str | None = None
    note: str = ""


@dataclass
class PromptSet:
    name: str
    origin: str  # the file(s) it was read from
    task: str | None  # built-in lm-eval task giving the data file, layout and metrics
    fields: str  # the prompt_docs processor
    source: dict | None  # or generated documents: {generator, file, parameters...}
    output_type: str
    metrics: list[str]
    templates: dict[str, Template]

    def pairs(self) -> dict[str, dict[str, str]]:
        """pair name -> {order: template name}."""
        out: dict[str, dict[str, str]] = {}
        for t in self.templates.values():
            if t.pair:
                out.setdefault(t.pair, {})[t.order] = t.name
        return out


# ---- reading ----------------------------------------------------------------------------------------
def prompt_dirs(user_dir: str | Path | None = None) -> list[Path]:
    """The shipped templates, then the user's folder (whose files add to and update the shipped ones)."""
    dirs = [conf_dir() / "prompts"]
    if user_dir:
        user_dir = Path(user_dir)
        if not user_dir.is_dir():
            raise ConfigError(f"prompt_dir={user_dir}: not a folder (expected a folder of <set>.yaml template files)")
        dirs.append(user_dir)
    return dirs


def available(user_dir: str | Path | None = None) -> list[str]:
    return sorted({p.stem for d in prompt_dirs(user_dir) for p in d.glob("*.yaml")})


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'templates' key, found {type(data).__name__}")
    return data


def _merge(base: dict, over: dict) -> dict:
    """`over` on `base`: top-level keys replaced, `shared` merged, templates merged key by key."""
    out = {**base, **{k: v for k, v in over.items() if k not in ("shared", "templates")}}
    out["shared"] = {**(base.get("shared") or {}), **(over.get("shared") or {})}
    templates = dict(base.get("templates") or {})
    for name, spec in (over.get("templates") or {}).items():
        old = templates.get(name)
        templates[name] = {**old, **spec} if isinstance(old, dict) and isinstance(spec, dict) else spec
    out["templates"] = templates
    return out


def _raw(name: str, dirs: list[Path], chain: tuple = ()) -> tuple[dict, list[str]]:
    merged: dict = {}
    origins: list[str] = []
    for d in dirs:
        path = d / f"{name}.yaml"
        if not path.is_file():
            continue
        data = _read(path)
        if "include" in data:
            parent = data.pop("include")
            if parent in chain + (name,):
                raise ConfigError(f"{path}: include {parent!r} makes a cycle ({' -> '.join(chain + (name, parent))})")
            base, base_origins = _raw(str(parent), dirs, chain + (name,))
            if not base_origins:
                raise ConfigError(f"{path}: include {parent!r}: no such prompt set; valid: {', '.join(available())}")
            data = _merge(base, data)
            origins += base_origins
        merged = _merge(merged, data)
        origins.append(str(path))
    return merged, origins


def load_set(name: str, user_dir: str | Path | None = None, extra: dict | None = None) -> PromptSet:
    """Prompt set `name`, validated: every key known, every template complete, every pair whole."""
    dirs = prompt_dirs(user_dir)
    raw, origins = _raw(name, dirs)
    if not origins:
        raise ConfigError(f"unknown prompt set {name!r}; valid: {', '.join(available(user_dir))} "
                          f"(conf/prompts/*.yaml, or {name}.yaml in prompt_dir=)")
    if extra:
        raw = _merge(raw, {"templates": extra})
        origins.append(f"extra_templates.{name}")
    origin = " + ".join(dict.fromkeys(origins))
    _check_keys(raw, SET_KEYS, origin)
    task, fields, source = raw.get("task"), raw.get("fields", "raw"), raw.get("source")
    if (task is None) == (source is None):
        raise ConfigError(f"{origin}: give either 'task' (a built-in lm-eval task: {', '.join(BUILTIN)}) or "
                          f"'source' (generated documents), not {'both' if task else 'neither'}")
    if task is not None:
        if task not in BUILTIN:
            raise ConfigError(f"{origin}: task {task!r} is not a built-in lm-eval task; valid: {', '.join(BUILTIN)}")
        _, layout, overrides = BUILTIN[task]
        base = {**LAYOUTS[layout], **overrides}
        output_type, metrics = base["output_type"], [m["metric"] for m in base["metric_list"]]
    else:
        if not isinstance(source, dict) or source.get("generator") not in GENERATORS or not source.get("file"):
            raise ConfigError(f"{origin}: source must be a mapping with 'generator' (one of {', '.join(GENERATORS)}) "
                              f"and 'file', found {source!r}")
        output_type, metrics = "multiple_choice", list(raw.get("metrics") or ["acc", "acc_norm"])
    if fields not in FIELDS:
        raise ConfigError(f"{origin}: fields {fields!r} is not a document processor; valid: {', '.join(FIELDS)}")

    shared = raw.get("shared") or {}
    _check_keys(shared, PROMPT_KEYS, f"{origin}: shared")
    specs = raw.get("templates") or {}
    if not isinstance(specs, dict) or not specs:
        raise ConfigError(f"{origin}: 'templates' must be a non-empty mapping of template name -> fields")
    templates = {t: _template(t, spec, shared, output_type, f"{origin}: template {t!r}") for t, spec in specs.items()}
    pset = PromptSet(name, origin, task, fields, dict(source) if source else None, output_type, metrics, templates)
    orders: dict[str, list[str]] = {}
    for t in templates.values():
        if t.pair:
            orders.setdefault(t.pair, []).append(t.order)
    for pair, found in orders.items():
        if sorted(found) != sorted(ORDERS):
            raise ConfigError(f"{origin}: pair {pair!r} has {sorted(found)}; a pair is one question_first and one "
                              f"passage_first template")
    return pset


def _check_keys(spec: dict, valid: tuple, where: str) -> None:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping, found {type(spec).__name__}")
    unknown = [k for k in spec if k not in valid]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(valid)}")


def _template(name: str, spec, shared: dict, output_type: str, where: str) -> Template:
    if not NAME.match(str(name)) or name in RESERVED:
        raise ConfigError(f"{where}: a template name is letters, digits and '_', and not {' or '.join(RESERVED)}")
    _check_keys(spec, PROMPT_KEYS + META_KEYS, where)
    prompt = {**shared, **{k: spec[k] for k in PROMPT_KEYS if k in spec}}
    needed = ("doc_to_text", "doc_to_target") + (("doc_to_choice",) if output_type == "multiple_choice" else ())
    for key in needed:
        if key not in prompt:
            raise ConfigError(f"{where}: no {key} (set it in the template or under shared)")
    for key, value in prompt.items():
        if not isinstance(value, str) and not (key == "doc_to_choice" and isinstance(value, list)):
            raise ConfigError(f"{where}: {key} must be a string (Jinja or a field name), found {value!r}")
    order, pair = spec.get("order"), spec.get("pair")
    if (order is None) != (pair is None) or (order is not None and order not in ORDERS):
        raise ConfigError(f"{where}: order and pair come together, order one of {', '.join(ORDERS)}; found "
                          f"order={order!r}, pair={pair!r}")
    return Template(name, prompt, order, pair, str(spec.get("note", "")))


# ---- lm-eval task configs -------------------------------------------------------------------------
def task_name(pset: PromptSet, template: Template) -> str:
    return f"prompt_{pset.name}_{template.name}"


def _source_file(pset: PromptSet, data_dir, data_files: dict) -> Path:
    if pset.name in data_files:
        return Path(data_files[pset.name])
    if not data_dir:
        raise ConfigError(f"prompt set {pset.name}: its documents are generated from {pset.source['file']} "
                          f"(relative to data_dir=): give data_dir= or data_files.{pset.name}=FILE")
    return (Path(data_dir) / pset.source["file"]).resolve()


def base_config(pset: PromptSet, data_dir=None, data_files: dict | None = None) -> dict:
    """The lm-eval task config every template of the set is laid over (data, metrics, document fields)."""
    data_files = dict(data_files or {})
    if pset.source is not None:
        params = {k: v for k, v in pset.source.items() if k not in ("generator", "file")}
        return {"custom_dataset": GENERATORS[pset.source["generator"]], "test_split": "test",
                "dataset_kwargs": {"path": str(_source_file(pset, data_dir, data_files)), **params},
                "output_type": pset.output_type, "metadata": {"version": 1.0},
                "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in pset.metrics]}
    files = {pset.task: data_files[k] for k in (pset.task, pset.name) if k in data_files}  # the set's own key wins
    config = resolve_task(pset.task, data_dir, files)
    if isinstance(config, str):
        raise ConfigError(f"prompt set {pset.name}: needs the local data of {pset.task}: give data_dir= (a folder "
                          f"in the shared layout) or data_files.{pset.name}=FILE")
    config = {k: v for k, v in config.items() if k not in PROMPT_KEYS}  # the layout's own prompt goes
    return {**config, "process_docs": process_docs(pset.fields)}


class Field:
    """A template's doc_to_text / doc_to_choice / doc_to_target as the callable lm-eval takes, compiled
    once. lm-eval compiles a string field again for every document and every call (several per
    request), which costs more than scoring on a GPU; this renders in lm-eval's own Jinja environment
    and reads the result the way its string fields are read (ConfigurableTask.doc_to_text and kin): a
    document field's name gives the field; a rendered number is an index where there are choices; a
    rendered list is a list."""

    def __init__(self, key: str, source: str, has_choices: bool):
        self.key, self.source, self.has_choices = key, source, has_choices
        self._template = None

    def __call__(self, doc):
        if self.source in doc:
            return doc[self.source]
        if self._template is None:
            from lm_eval.utils import env

            self._template = env.from_string(self.source)
        text = self._template.render(**doc)
        if self.key == "doc_to_choice":
            return ast.literal_eval(text)
        if text.isdigit() and self.has_choices:
            return ast.literal_eval(text)
        if self.key == "doc_to_target" and len(text) >= 2 and text[0] == "[" and text[-1] == "]":
            try:
                return ast.literal_eval(text)
            except (SyntaxError, ValueError):
                return text
        return text

    def __getstate__(self):  # the compiled template is rebuilt, not copied
        return {**self.__dict__, "_template": None}

    def __repr__(self):  # lm-eval writes a callable field into its results JSON as str(field)
        return self.source


def task_config(pset: PromptSet, template: Template, base: dict) -> dict:
    """The lm-eval task config of one template: the set's base config with the template's fields."""
    prompt = dict(template.prompt)
    has_choices = "doc_to_choice" in prompt
    for key in ("doc_to_text", "doc_to_choice", "doc_to_target"):
        if isinstance(prompt.get(key), str):
            prompt[key] = Field(key, prompt[key], has_choices)
    return {**base, "task": task_name(pset, template), **prompt}


def documents(pset: PromptSet, base: dict) -> list[dict]:
    """The set's documents as the templates see them (raw fields), read here to check them before any
    model runs: a document the processor cannot read is a DataError naming its file and line."""
    if "custom_dataset" in base:
        return list(base["custom_dataset"](**base["dataset_kwargs"])["test"])
    import json

    path = Path(base["dataset_kwargs"]["data_files"]["test"])
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                raise DataError(f"{path}:{lineno}: not a JSON object") from None
            out.append(to_fields(pset.fields, doc, f"{path}:{lineno}"))
    return out


def _first_docs(docs: list[dict], **_lm_eval_metadata) -> dict:
    import datasets

    return {"test": datasets.Dataset.from_list(docs)}


def on_documents(config: dict, docs: list[dict]) -> dict:
    """The task config over the given documents (raw fields) instead of its data: to render a few."""
    probe = {k: v for k, v in config.items() if k not in ("process_docs", "dataset_path", "dataset_kwargs")}
    probe.update(custom_dataset=partial(_first_docs, docs), test_split="test", validation_split=None,
                 training_split=None)
    return probe


def check_renders(pset: PromptSet, config: dict, docs: list[dict], where: str) -> None:
    """Render the template on a few documents through lm-eval itself (a typo in a field name, a bad
    choice list, a target outside the choices) as a one-line ConfigError, before any model runs."""
    try:
        requests = rendered_requests(on_documents(config, docs[:3]))
    except Exception as e:  # noqa: BLE001  (jinja, literal_eval and lm-eval's own checks raise many types)
        raise ConfigError(f"{where}: does not render on document 0 ({type(e).__name__}: {e})") from None
    if not requests:
        raise ConfigError(f"{where}: renders no requests")


@dataclass(frozen=True)
class Request:
    doc_id: int
    index: int  # which choice (or context, for a multiple-input task like winogrande)
    context: str
    continuation: str
    gold: object  # the document's target as lm-eval sees it


@contextmanager
def _quiet_lm_eval():
    """Rendering is not evaluating: lm-eval's per-task notices (custom datasets, ...) stay out of it."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def rendered_requests(config: dict, limit: int | None = None) -> list[Request]:
    """Exactly the (context, continuation) pairs lm-eval sends the model for this task config."""
    from lm_eval.api.task import ConfigurableTask

    with _quiet_lm_eval():
        task = ConfigurableTask(config=dict(config))
        task.build_all_requests(limit=limit, rank=0, world_size=1)
    return [Request(inst.doc_id, inst.idx, inst.args[0], inst.args[1], task.doc_to_target(inst.doc))
            for inst in sorted(task.instances, key=lambda i: (i.doc_id, i.idx))]
