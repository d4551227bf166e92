"""Prompt sensitivity: templates as data, the requests each template sends, per-template metrics, the
summary across templates and families (recomputed here from rows and per-document files), the
user's own templates, prompt dumps, the generated reading-comprehension set, and the errors a user meets."""

import functools
import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import NEOX_TOKENIZER, SHARED_DATA
from rwkvbench import load_model
from rwkvbench.errors import ConfigError, DataError
from rwkvbench.evals import get_evaluator, get_summarizer
from rwkvbench.evals import prompt_templates as pt
from rwkvbench.evals import readcomp
from rwkvbench.evals.lm_eval_adapter import SequenceModelLM
from rwkvbench.evals.lm_eval_tasks import resolve_task
from rwkvbench.evals.prompt_docs import to_fields
from rwkvbench.evals.prompts import BOTH, SUITE, SUMMARY, bootstrap, docs_file, spread
from rwkvbench.results import ResultsWriter, read_results
from rwkvbench.units import run_units

pytest.importorskip("lm_eval")
EVAL_DATA = SHARED_DATA / "eval"
CORPUS_TEST = SHARED_DATA / "corpus" / "test.jsonl.xz"
TASK_SETS = ["piqa", "arc_easy", "arc_challenge", "openbookqa", "copa", "boolq", "winogrande", "lambada"]
PAIRED_SETS = ["boolq", "readcomp", "copa", "winogrande"]  # sets with a passage or premise and a question


def needs_eval_data():
    if not EVAL_DATA.is_dir():
        pytest.skip(f"{EVAL_DATA} not present")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def boolq_file(path, n=6):
    """BoolQ's local layout, short passages (fast on CPU)."""
    facts = ["The river is long and wide.", "The tower is made of stone.", "The bird can fly far.",
             "The lake is cold in winter.", "The road goes to the sea.", "The tree is very old."]
    return write_jsonl(path, [{"query": f"Passage: {facts[i % 6]} It has stood for {i + 2} years.\nQuestion: is it "
                                        f"older than {i + 1} years?", "choices": ["no", "yes"], "gold": (i + 1) % 2}
                              for i in range(n)])


def part(**overrides):
    base = {"evaluator": "prompt_sensitivity", "name": "prompt_sensitivity", "sets": "boolq", "templates": None,
            "prompt_dir": None, "extra_templates": {}, "dump_prompts": 0, "data_dir": None, "data_files": {},
            "limit": None, "default_limit": 1000, "num_fewshot": 0, "batch_size": 8, "bootstrap_iters": 100,
            "seed": 1234, "ci_resamples": 500, "ci": 0.95}
    return OmegaConf.create({**base, **overrides})


def key(r):
    return (r.doc_id, r.index, r.context, r.continuation)


# ---- the shipped templates -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", TASK_SETS + ["readcomp"])
def test_every_set_has_six_templates_a_default_and_whole_pairs(name):
    pset = pt.load_set(name)
    assert len(pset.templates) >= 6 and "default" in pset.templates
    for pair, orders in pset.pairs().items():
        assert set(orders) == {"question_first", "passage_first"}, pair
    if name in PAIRED_SETS:
        assert pset.pairs(), f"{name} has a passage or premise and a question: it needs question-first/passage-first pairs"


@pytest.mark.parametrize("name", TASK_SETS)
def test_default_template_sends_exactly_lm_evals_requests(name):
    """The default template over the raw fields equals today's task config over the local layout
    (which reproduces lm-eval's own prompt), request for request."""
    needs_eval_data()
    pset = pt.load_set(name)
    base = pt.base_config(pset, EVAL_DATA)
    limit = 400
    ours = pt.rendered_requests(pt.task_config(pset, pset.templates["default"], base), limit=limit)
    builtin = pt.rendered_requests(resolve_task(pset.task, str(EVAL_DATA)), limit=limit)
    assert len(ours) >= min(limit, 100) and [key(r) for r in ours] == [key(r) for r in builtin]


@pytest.mark.slow
def test_default_template_equals_lm_evals_requests_on_every_document():
    needs_eval_data()
    for name in TASK_SETS:
        pset = pt.load_set(name)
        base = pt.base_config(pset, EVAL_DATA)
        ours = pt.rendered_requests(pt.task_config(pset, pset.templates["default"], base))
        builtin = pt.rendered_requests(resolve_task(pset.task, str(EVAL_DATA)))
        assert [key(r) for r in ours] == [key(r) for r in builtin], name


@pytest.fixture(scope="module")
def neox_tokens():
    """lm-eval's split of a request into context and continuation tokens (trailing whitespace moves to the
    continuation), with the GPT-NeoX-20B tokenizer every RWKV-4-Pile and Pythia model uses."""
    if not NEOX_TOKENIZER.is_file():
        pytest.skip(f"{NEOX_TOKENIZER} not present")
    from rwkvbench.models.tokenizer import HFTokenizer

    import torch

    # only the tokenizer is used: a stand-in model (the adapter reads a SequenceModel's device on creation)
    lm = SequenceModelLM(SimpleNamespace(tokenizer=HFTokenizer(NEOX_TOKENIZER), device=torch.device("cpu")))
    return lambda r: tuple(map(tuple, lm._encode_pair(r.context, r.continuation)))


def question_text(name, doc):
    return {"boolq": doc.get("question"), "readcomp": doc.get("question"), "copa": doc.get("question"),
            "winogrande": "who or what is _"}[name]


def passage_text(name, doc):
    return doc[{"boolq": "passage", "readcomp": "passage", "copa": "premise", "winogrande": "sentence"}[name]]


@functools.lru_cache(maxsize=None)
def rendered(name, n_docs=4):
    """Set `name`'s documents (raw fields) and each template's requests for the first `n_docs`, on the real data."""
    needs_eval_data()
    if name == "readcomp" and not CORPUS_TEST.is_file():
        pytest.skip(f"{CORPUS_TEST} not present")
    pset = pt.load_set(name)
    base = pt.base_config(pset, EVAL_DATA)
    docs = pt.documents(pset, base)[:n_docs]
    return pset, docs, {t: pt.rendered_requests(pt.on_documents(pt.task_config(pset, tpl, base), docs))
                        for t, tpl in pset.templates.items()}


@pytest.mark.parametrize("name", TASK_SETS + ["readcomp"])
def test_each_template_changes_what_the_model_is_sent(name, neox_tokens):
    """Every template's requests differ from every other's, as text and as the tokens the model scores;
    each pair puts the question before the passage in one template and after it in the other."""
    pset, docs, requests = rendered(name)
    texts = {t: tuple((r.context, r.continuation) for r in rs) for t, rs in requests.items()}
    tokens = {t: tuple(neox_tokens(r) for r in rs) for t, rs in requests.items()}
    assert len(set(texts.values())) == len(texts) and len(set(tokens.values())) == len(tokens)
    if name == "lambada":  # BlinkDL's layout: the context starts with the "\n" token (ChatRWKV's PAD_SEQ)
        assert tokens["newline_first"][0][0][0] == 187 and tokens["default"][0][0][0] != 187
    for pair, orders in pset.pairs().items():
        for order, template in orders.items():
            for r in requests[template]:
                doc = docs[r.doc_id]
                question, passage = question_text(name, doc), passage_text(name, doc)
                text = r.context + r.continuation
                assert question in text and passage in text, (template, r)
                before, after = text.split(passage, 1)
                assert question in (before if order == "question_first" else after), (template, order, r.context)


@pytest.fixture(scope="module")
def tiny_lm():
    return SequenceModelLM(load_model("neox_tiny", device="cpu"), batch_size=8)


@pytest.mark.parametrize("name", TASK_SETS + ["readcomp"])
def test_prefix_reuse_works_for_every_multiple_choice_template(name, tiny_lm):
    """The adapter scores a question's choices from one prefill of their shared context, whatever the
    template; only the multiple-input form (a context per choice, winogrande's) has none to share."""
    pset, docs, requests = rendered(name, 1)
    for template, rs in requests.items():
        before = tiny_lm.stats["prefix_tokens_saved"]
        tiny_lm._loglikelihood_tokens([(None, *tiny_lm._encode_pair(r.context, r.continuation)) for r in rs],
                                      disable_tqdm=True)
        saved = tiny_lm.stats["prefix_tokens_saved"] - before
        contexts = {r.context for r in rs}
        if pset.output_type == "multiple_choice" and len(contexts) == 1:
            assert saved > 0, template
        else:  # lambada's single continuation, winogrande's partial scoring
            assert saved == 0 and (len(rs) == 1 or len(contexts) == len(rs)), template


def test_doc_processors_recover_lm_evals_fields():
    wino = to_fields("winogrande", {"context_options": ["The cat sat so the cat", "The cat sat so the dog"],
                                    "continuation": "was happy.", "gold": 1}, "here")
    assert wino == {"sentence": "The cat sat so the _ was happy.", "option1": "cat", "option2": "dog", "answer": "2"}
    wino = to_fields("winogrande", {"context_options": ["Ann", "Bob"], "continuation": "'s car is red.", "gold": 0}, "")
    assert wino["sentence"] == "_'s car is red." and (wino["option1"], wino["option2"]) == ("Ann", "Bob")
    copa = to_fields("copa", {"query": "The man fell, because", "choices": ["he slipped.", "he sang."], "gold": 0}, "")
    assert copa == {"premise": "The man fell.", "question": "cause", "choice1": "He slipped.", "choice2": "He sang.",
                    "label": 0}
    boolq = to_fields("boolq", {"query": "Passage: A book called\nQuestion: The Answer.\nQuestion: is it?",
                                "choices": ["no", "yes"], "gold": 1}, "")
    assert boolq == {"passage": "A book called\nQuestion: The Answer.", "question": "is it", "label": 1}
    arc = to_fields("arc", {"query": "Question: Why?", "choices": ["a", "b", "c"], "gold": 2}, "")
    assert arc == {"question": "Why?", "choices": {"text": ["a", "b", "c"], "label": ["A", "B", "C"]}, "answerKey": "C"}
    with pytest.raises(DataError, match=r"f.jsonl:3: not in the layout the 'piqa' fields expect \(missing field"):
        to_fields("piqa", {"context": "x"}, "f.jsonl:3")


# ---- measuring: rows, per-document files, summary ---------------------------------------------------------
TEMPLATES = ["default", "qfirst", "labeled", "labeled_qfirst"]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Both tiny families over five BoolQ templates (two question-first/passage-first pairs), then the summary."""
    root = tmp_path_factory.mktemp("prompts")
    cfg = part(templates=TEMPLATES, data_files={"boolq": str(boolq_file(root / "boolq.jsonl"))})
    out = root / "out"
    writer = ResultsWriter(out)
    for name in ("rwkv4_tiny", "neox_tiny"):
        model = load_model(name, device="cpu")
        run_units(model, get_evaluator("prompt_sensitivity")(model, cfg), writer)
    summary = get_summarizer("prompt_sensitivity")(writer.read(), out, cfg)
    writer.append(summary)
    return SimpleNamespace(out=out, cfg=cfg, df=read_results(out), summary=pd.DataFrame(summary))


def per_doc(measured, model, template):
    df = measured.df
    row = df[(df.model == model) & (df.variant == template) & (df.metric == "acc")].iloc[0]
    return pd.read_csv(measured.out / docs_file(model, "boolq", template, row.fingerprint), index_col="doc_id")


def test_each_template_is_measured_with_its_own_rows(measured):
    df = measured.df
    for model in ("rwkv4_tiny", "neox_tiny"):
        for t in TEMPLATES:
            rows = df[(df.model == model) & (df.suite == SUITE) & (df.task == "boolq") & (df.variant == t)]
            acc = rows[rows.metric == "acc"].iloc[0]
            assert acc.n == 6 and pd.notna(acc.stderr)
            docs = per_doc(measured, model, t)
            assert list(docs.index) == list(range(6)) and acc.value == pytest.approx(docs.acc.mean())
            # prefix reuse: the two answers of a question share one prefill of its context
            assert rows[rows.metric == "prefix_tokens_saved"].value.iloc[0] > 0


def test_summary_rows_equal_a_recomputation_from_rows_and_files(measured):
    df, s = measured.df, measured.summary
    acc = df[(df.suite == SUITE) & (df.metric == "acc") & df.variant.isin(TEMPLATES)]
    for model, rows in acc.groupby("model"):
        mine = s[(s.model == model) & (s.variant == SUMMARY)].set_index("metric").value
        v = rows.value
        assert mine["acc_mean"] == pytest.approx(v.mean()) and mine["acc_std"] == pytest.approx(v.std())
        assert mine["acc_min"] == v.min() and mine["acc_max"] == v.max()
        assert mine["acc_range"] == pytest.approx(v.max() - v.min())
        diffs = {p: per_doc(measured, model, q).acc - per_doc(measured, model, pf).acc
                 for p, (q, pf) in {"lm_eval": ("qfirst", "default"), "labeled": ("labeled_qfirst", "labeled")}.items()}
        for pair, d in diffs.items():
            row = s[(s.model == model) & (s.variant == f"{SUMMARY}:{pair}")].set_index("metric").value
            assert row["acc_qfirst_minus_pfirst"] == pytest.approx(d.mean())
            assert row["acc_qfirst_minus_pfirst_ci_low"] <= d.mean() <= row["acc_qfirst_minus_pfirst_ci_high"]
        pooled = pd.DataFrame(diffs).mean(axis=1).mean()
        assert mine["acc_qfirst_minus_pfirst"] == pytest.approx(pooled)
    family = s[s.model == BOTH].set_index("metric")
    assert set(family.family) == {"both"} and family.loc["acc_std_diff", "note"] == "rwkv4_tiny minus neox_tiny"
    # the pair's weights are in the key: another pair's comparison merged into one report is kept beside it
    ckpt = acc.groupby("model").checkpoint.first()
    assert set(family.checkpoint) == {f"rwkv4_tiny ({ckpt['rwkv4_tiny']}) minus neox_tiny ({ckpt['neox_tiny']})"}
    from rwkvbench.results import KEY, dedupe

    both = s[s.model == BOTH].reindex(columns=list(dict.fromkeys([*s.columns, *KEY])))
    other = both.assign(checkpoint="rwkv4_s7 (a.pth) minus neox_s7 (b)")
    assert len(dedupe(pd.concat([both, other]))) == 2 * len(both)
    by_model = acc.groupby("model").value
    assert family.loc["acc_std_diff", "value"] == pytest.approx(by_model.std()["rwkv4_tiny"] - by_model.std()["neox_tiny"])
    spread_ = by_model.max() - by_model.min()
    assert family.loc["acc_range_diff", "value"] == pytest.approx(spread_["rwkv4_tiny"] - spread_["neox_tiny"])
    for m in ("acc_std_diff", "acc_range_diff", "acc_qfirst_minus_pfirst_diff"):
        assert family.loc[f"{m}_ci_low", "value"] <= family.loc[f"{m}_ci_high", "value"], m
        assert family.loc[m, "n"] == 6


def test_runs_are_seeded_and_units_reused(measured, tmp_path):
    """The summary's intervals come out the same again (rows of other suites in the folder or not); the
    same units are recognised as measured; a fresh run of a unit gives the same per-document results."""
    other = pd.DataFrame([{"model": "x", "metric": "acc", "value": 0.5}])  # no suite: another evaluator's row
    again = pd.DataFrame(get_summarizer("prompt_sensitivity")(pd.concat([measured.df, other]), measured.out,
                                                              measured.cfg))
    cols = ["model", "variant", "metric", "value", "stderr"]
    pd.testing.assert_frame_equal(again[cols].reset_index(drop=True), measured.summary[cols].reset_index(drop=True))
    model = load_model("neox_tiny", device="cpu")
    counts = run_units(model, get_evaluator("prompt_sensitivity")(model, measured.cfg), ResultsWriter(measured.out))
    assert counts["reused"] == len(TEMPLATES) and counts["ran"] == 0
    fresh = get_evaluator("prompt_sensitivity")(model, measured.cfg)[1]
    run_units(model, [fresh], ResultsWriter(tmp_path))
    row = read_results(tmp_path).query("metric == 'acc'").iloc[0]
    path = tmp_path / docs_file("neox_tiny", "boolq", row.variant, row.fingerprint)
    assert pd.read_csv(path, index_col="doc_id").equals(per_doc(measured, "neox_tiny", row.variant))


def test_spread_and_bootstrap_against_plain_references():
    v = [0.5, 0.7, 0.6]
    s = spread(v)
    assert s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(np.std(v, ddof=1)) and s["range"] == pytest.approx(0.2)
    rng = np.random.default_rng(0)
    d = rng.integers(-1, 2, size=50).astype(float)
    se, lo, hi = bootstrap(lambda x: x.mean(axis=1), [d], resamples=300, seed=7, ci=0.9)
    plain_rng = np.random.default_rng(7)
    plain = np.array([d[plain_rng.integers(0, 50, size=50)].mean() for _ in range(300)])
    assert se == pytest.approx(plain.std(ddof=1)) and (lo, hi) == pytest.approx(tuple(np.quantile(plain, [0.05, 0.95])))
    assert bootstrap(lambda x: x.mean(axis=1), [np.zeros(10)], 100, 0, 0.95) == (0.0, 0.0, 0.0)


# ---- the user's own templates, dumps, errors ----------------------------------------------------------------
def test_users_templates_from_a_folder_and_inline_are_measured(tmp_path):
    data = boolq_file(tmp_path / "boolq.jsonl", n=2)
    user = tmp_path / "my_prompts"
    user.mkdir()
    (user / "boolq.yaml").write_text('templates:\n  mine:\n    doc_to_text: "Q: {{question}}? P: {{passage}} A:"\n'
                                     '  default:\n    target_delimiter: "\\n"\n')
    (user / "boolq_short.yaml").write_text('include: boolq\ntemplates:\n  short:\n    doc_to_text: "{{question}}?"\n')
    extra = {"boolq": {"inline": {"doc_to_text": "{{passage}} {{question}}?"}}}
    cfg = part(sets=["boolq", "boolq_short"], prompt_dir=str(user), extra_templates=extra, dump_prompts=2,
               templates=["mine", "inline", "short", "default"], data_files={"boolq": str(data), "boolq_short": str(data)})
    model = load_model("neox_tiny", device="cpu")
    units = get_evaluator("prompt_sensitivity")(model, cfg)
    assert [(u.key["task"], u.key["variant"]) for u in units] == [
        ("boolq", "default"), ("boolq", "mine"), ("boolq", "inline"), ("boolq", "rendered_prompts"),
        ("boolq_short", "default"), ("boolq_short", "mine"), ("boolq_short", "short"), ("boolq_short", "rendered_prompts")]
    dump = units[3].measure(None)
    text = dump.files["prompt_sensitivity/prompts/boolq.txt"]
    assert "==== template mine" in text and "repr: 'Q: is it older than 1 years? P: The river" in text
    assert "repr: 'The river is long and wide. It has stood for 2 years.\\nQuestion: is it older than 1 years?\\nAnswer:' + '\\nno'" in text
    run_units(model, units[1:2], ResultsWriter(tmp_path / "out"))
    df = read_results(tmp_path / "out")
    assert df[(df.metric == "acc")].variant.tolist() == ["mine"]


def test_templates_are_checked_before_any_model_runs(tmp_path):
    user = tmp_path / "p"
    user.mkdir()
    model = SimpleNamespace(name="never_runs")  # nothing of the model is touched before the checks pass
    data = {"boolq": str(boolq_file(tmp_path / "boolq.jsonl", n=2))}
    evaluator = get_evaluator("prompt_sensitivity")
    (user / "boolq.yaml").write_text('templates:\n  typo:\n    doc_to_text: "{{pasage}}"\n')
    with pytest.raises(ConfigError, match=r"boolq.yaml: template 'typo': does not render on document 0 "
                                          r"\(UndefinedError: 'pasage' is undefined\)"):
        evaluator(model, part(prompt_dir=str(user), data_files=data))
    (user / "boolq.yaml").write_text('templates:\n  odd:\n    doc_to_txt: "{{passage}}"\n')
    with pytest.raises(ConfigError, match=r"template 'odd': unknown key 'doc_to_txt'; valid: doc_to_text"):
        evaluator(model, part(prompt_dir=str(user), data_files=data))
    (user / "boolq.yaml").write_text('templates:\n  alone:\n    order: question_first\n    pair: lonely\n'
                                     '    doc_to_text: "{{question}}? {{passage}}"\n')
    with pytest.raises(ConfigError, match=r"pair 'lonely' has \['question_first'\]; a pair is one question_first"):
        evaluator(model, part(prompt_dir=str(user), data_files=data))
    with pytest.raises(ConfigError, match=r"unknown prompt set 'piqq'; valid: arc_challenge, arc_easy"):
        evaluator(model, part(sets="piqq"))
    with pytest.raises(ConfigError, match=r"prompt set boolq: needs the local data of boolq: give data_dir="):
        evaluator(model, part())
    with pytest.raises(ConfigError, match=r"templates: 'nope' is in none of boolq"):
        evaluator(model, part(templates=["nope"], data_files=data))
    with pytest.raises(ConfigError, match=r"extra_templates.piqa: 'piqa' is not among this run's prompt sets"):
        evaluator(model, part(extra_templates={"piqa": {}}, data_files=data))
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"query": "no passage here", "choices": ["no", "yes"], "gold": 0}])
    with pytest.raises(DataError, match=r"bad.jsonl:1: not in the layout the 'boolq' fields expect"):
        evaluator(model, part(data_files={"boolq": str(bad)}))


def test_cli_config_resolves_the_base_set_and_limit():
    from hydra import compose, initialize_config_dir

    from rwkvbench.config import conf_dir

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        one = compose("config", overrides=["task=prompt_sensitivity", "task.base=boolq", "task.templates=[default]"])
        every = compose("config", overrides=["task=prompt_sensitivity_all", "limit=50"])
    p = OmegaConf.to_container(one.task.parts[0], resolve=True)
    assert p["evaluator"] == "prompt_sensitivity" and p["sets"] == "boolq" and p["templates"] == ["default"]
    assert p["limit"] is None and p["default_limit"] == 1000
    q = OmegaConf.to_container(every.task.parts[0], resolve=True)
    assert set(q["sets"]) == set(TASK_SETS + ["readcomp"]) == set(pt.available()) and q["limit"] == 50


# ---- the generated reading-comprehension set ---------------------------------------------------------------
def test_readcomp_documents_are_seeded_and_answerable_from_the_passage(tmp_path):
    words = ("harbor lantern granite meadow orchard pilgrim quarry saddle tunnel violin walnut basket candle dolphin "
             "engine falcon garden hammer island jacket kettle ladder mirror needle").split()
    text = "\n".join(" ".join(f"The {w} stood near {words[(i + j) % len(words)]}s of the northern valley." for j in range(6))
                     for i, w in enumerate(words))
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": text}])
    a = readcomp.generate(str(corpus), docs=10, seed=3, min_words=30, max_words=200)
    assert a == readcomp.generate(str(corpus), docs=10, seed=3, min_words=30, max_words=200)
    assert a != readcomp.generate(str(corpus), docs=10, seed=4, min_words=30, max_words=200)
    assert len(a) == 10
    for doc in a:
        answer = doc["choices"][doc["label"]]
        assert len(set(doc["choices"])) == 4 and "___" in doc["question"]
        assert doc["question"].replace("___", answer) in doc["passage"]
        assert all(c not in doc["question"] for c in doc["choices"])
    with pytest.raises(DataError, match="readcomp: corpus file .*nope.jsonl not found"):
        readcomp.generate(str(tmp_path / "nope.jsonl"))
    (tmp_path / "bad.jsonl").write_text("[1, 2]\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: expected a JSON object with a 'text' field"):
        readcomp.generate(str(tmp_path / "bad.jsonl"))


@pytest.mark.slow
def test_cli_runs_a_prompt_set_end_to_end(tmp_path):
    """The command a user types: both families, every COPA template, the summary rows and the dump."""
    import subprocess
    import sys

    needs_eval_data()
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rwkvbench", "task=prompt_sensitivity", "task.base=copa", f"data_dir={EVAL_DATA}",
           "limit=3", "task.dump_prompts=1", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = read_results(out)
    n_templates = len(pt.load_set("copa").templates)
    assert (df[(df.metric == "acc") & (df.variant != SUMMARY)].groupby("model").size() == n_templates).all()
    assert {"acc_std", "acc_qfirst_minus_pfirst"} <= set(df[df.variant == SUMMARY].metric)
    assert "acc_std_diff" in set(df[df.model == BOTH].metric)
    assert df.value.dropna().map(math.isfinite).all()
    assert (out / "prompt_sensitivity" / "prompts" / "copa.txt").is_file()


@pytest.mark.gpu
def test_cuda_run_repeats_itself_and_agrees_with_cpu(measured, tmp_path):
    """On CUDA (fp32): two runs give identical per-document results, and they agree with the CPU run."""
    cfg = part(templates=["default", "qfirst"], data_files=OmegaConf.to_container(measured.cfg.data_files))
    for name in ("rwkv4_tiny", "neox_tiny"):
        model = load_model(name, device="cuda", dtype="fp32")
        for run in ("a", "b"):
            run_units(model, get_evaluator("prompt_sensitivity")(model, cfg), ResultsWriter(tmp_path / run))
        a, b = read_results(tmp_path / "a"), read_results(tmp_path / "b")
        for t in ("default", "qfirst"):
            fa, fb = (r[(r.model == name) & (r.variant == t) & (r.metric == "acc")].fingerprint.iloc[0] for r in (a, b))
            da = pd.read_csv(tmp_path / "a" / docs_file(name, "boolq", t, fa), index_col="doc_id")
            db = pd.read_csv(tmp_path / "b" / docs_file(name, "boolq", t, fb), index_col="doc_id")
            assert da.equals(db) and da.equals(per_doc(measured, name, t)), (name, t)
