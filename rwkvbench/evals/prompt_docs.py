"""Documents for prompt templates: lm-eval's raw fields, recovered from the local layout.

The shared evaluation sets use llm-foundry's layout, which has already baked one prompt into each
document ("Question: ...\n"). A template needs the raw fields instead (PIQA's goal, sol1, sol2), so each
task names a processor here that undoes the layout, giving the fields lm-eval's own dataset has. lm-eval's
own prompt strings then work unchanged on them: a set's `default` template is lm-eval's task YAML,
verbatim. A processor is a plain function doc -> fields; `process_docs(name)` is what an lm-eval task
config takes. Sets whose documents are generated (readcomp) have raw fields already: `raw`.
"""

from __future__ import annotations

import functools
import string
from typing import Callable

from rwkvbench.errors import DataError

FIELDS: dict[str, Callable[[dict], dict]] = {}
LETTERS = string.ascii_uppercase


def fields(name: str):
    def deco(fn):
        FIELDS[name] = fn
        return fn

    return deco


@fields("raw")
def raw(doc: dict) -> dict:
    return dict(doc)


@fields("piqa")
def piqa(doc: dict) -> dict:  # "Question: {goal}\n" -> lm-eval's piqa: goal, sol1, sol2, label
    sol1, sol2 = doc["choices"]
    return {"goal": _strip(doc["query"], "Question: ", "\n"), "sol1": sol1, "sol2": sol2, "label": int(doc["gold"])}


def _lettered(choices: list[str], gold: int) -> dict:
    """ARC's and OpenBookQA's choice block. The local layout lost the original labels: A, B, C, ... by position."""
    labels = list(LETTERS[: len(choices)])
    return {"choices": {"text": list(choices), "label": labels}, "answerKey": labels[int(gold)]}


@fields("arc")
def arc(doc: dict) -> dict:  # "Question: {question}" -> question, choices {text, label}, answerKey
    return {"question": _strip(doc["query"], "Question: "), **_lettered(doc["choices"], doc["gold"])}


@fields("openbookqa")
def openbookqa(doc: dict) -> dict:  # "{question_stem}" -> question_stem, choices {text, label}, answerKey
    return {"question_stem": doc["query"], **_lettered(doc["choices"], doc["gold"])}


COPA_CONNECTORS = {"therefore": "effect", "because": "cause"}


@fields("copa")
def copa(doc: dict) -> dict:
    """ "{premise without its period}, therefore" -> premise, question (cause | effect), choice1, choice2,
    label. The layout lowered each choice's first letter and dropped the premise's period: both restored."""
    head, sep, connector = doc["query"].rpartition(", ")
    if not sep or connector not in COPA_CONNECTORS:
        raise ValueError(f"query {doc['query']!r} does not end in ', therefore' or ', because'")
    choice1, choice2 = (c[:1].upper() + c[1:] for c in doc["choices"])
    return {"premise": head + ".", "question": COPA_CONNECTORS[connector], "choice1": choice1, "choice2": choice2,
            "label": int(doc["gold"])}


@fields("boolq")
def boolq(doc: dict) -> dict:  # "Passage: {passage}\nQuestion: {question}?" -> passage, question, label
    passage, sep, question = doc["query"].rpartition("\nQuestion: ")
    if not sep:
        raise ValueError("query has no '\\nQuestion: '")
    if list(doc["choices"]) != ["no", "yes"]:
        raise ValueError(f"choices {doc['choices']!r}, expected ['no', 'yes']")
    return {"passage": _strip(passage, "Passage: "), "question": _strip(question, "", "?"), "label": int(doc["gold"])}


@fields("winogrande")
def winogrande(doc: dict) -> dict:
    """context_options ["... so Sarah", "... so Maria"], continuation -> sentence "... so _ always ...",
    option1, option2, answer ("1" | "2"). The blank goes at the last word boundary the two options share."""
    a, b = doc["context_options"]
    cut = a.rfind(" ", 0, len(_common_prefix(a, b))) + 1
    rest = doc["continuation"]
    sentence = a[:cut] + "_" + (" " if rest[:1].isalnum() else "") + rest
    return {"sentence": sentence, "option1": a[cut:], "option2": b[cut:], "answer": str(int(doc["gold"]) + 1)}


@fields("lambada")
def lambada(doc: dict) -> dict:  # context, continuation -> text (lm-eval's: the passage, its last word included)
    return {"text": doc["context"] + " " + doc["continuation"]}


def _strip(text: str, prefix: str, suffix: str = "") -> str:
    if not text.startswith(prefix) or not text.endswith(suffix):
        raise ValueError(f"{text[:60]!r}... does not start with {prefix!r} and end with {suffix!r}")
    return text[len(prefix) : len(text) - len(suffix)]


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def to_fields(name: str, doc: dict, where: str) -> dict:
    """One document through processor `name`; a layout it does not expect is a DataError naming `where`."""
    try:
        return FIELDS[name](doc)
    except (KeyError, ValueError, TypeError, IndexError) as e:
        msg = f"missing field {e}" if isinstance(e, KeyError) else str(e)
        raise DataError(f"{where}: not in the layout the {name!r} fields expect ({msg})") from None


def _process(name: str, dataset):
    import datasets

    return datasets.Dataset.from_list([to_fields(name, doc, f"document {i}") for i, doc in enumerate(dataset)])


def process_docs(name: str) -> Callable:
    """lm-eval's `process_docs` for processor `name`: a dataset split -> the same documents as raw fields."""
    if name not in FIELDS:
        raise KeyError(name)
    return functools.partial(_process, name)
