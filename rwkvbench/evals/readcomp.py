"""A reading-comprehension set generated from held-out prose (the corpus test split), for
question-first versus passage-first prompts.

Each document is one paragraph of an article (the passage), one of its sentences with one word blanked
out (the question), and choices: that word and distractors drawn from the same paragraph. The answer is
in the passage word for word, so a model that can look back finds it in either order; a model that
reads once, front to back, has to know what to keep before it reads the passage. Seeded: the same file
and parameters give the same documents.
"""

from __future__ import annotations

import json
import lzma
import random
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

from rwkvbench.errors import DataError

WORD = re.compile(r"[A-Za-z]{5,}")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
# Frequent words a reader guesses without reading: never the answer, never a distractor.
COMMON = frozenset("""about above after again against along among another around because became become
been before being below between both could during each early either every first following found from
further great however including known large later least other their there these those three through
under until where which while would years""".split())


def _open(path: Path):
    return lzma.open(path, "rt", encoding="utf-8") if path.suffix == ".xz" else open(path, encoding="utf-8")


def paragraphs(path: Path, min_words: int, max_words: int) -> list[str]:
    """Every paragraph (line) of every document's text with a word count in range, in file order."""
    out = []
    with _open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (ValueError, KeyError, TypeError):
                raise DataError(f"{path}:{lineno}: expected a JSON object with a 'text' field (Pile-style JSON "
                                f"lines)") from None
            out += [p.strip() for p in text.split("\n") if min_words <= len(p.split()) <= max_words]
    return out


def _candidates(text: str) -> list[str]:
    """Words a question may ask about: long, not common, once only in `text` (the answer is unambiguous)."""
    words = WORD.findall(text)
    seen = Counter(w.lower() for w in words)
    return [w for w in words if w.lower() not in COMMON and seen[w.lower()] == 1]


def document(passage: str, rng: random.Random, n_choices: int) -> dict | None:
    sentences = [s for s in SENTENCE_END.split(passage) if len(s.split()) >= 8]
    if not sentences:
        return None
    sentence = rng.choice(sentences)
    candidates = _candidates(passage)
    in_sentence = set(WORD.findall(sentence))
    answers = [w for w in candidates if w in in_sentence]
    if not answers:
        return None
    answer = rng.choice(answers)
    others = [w for w in candidates if w not in in_sentence]  # a distractor is never a word of the question
    if len(others) < n_choices - 1:
        return None
    choices = [answer] + rng.sample(others, n_choices - 1)
    rng.shuffle(choices)
    question = re.sub(rf"(?<![A-Za-z]){answer}(?![A-Za-z])", "___", sentence, count=1)
    return {"passage": passage, "question": question, "choices": choices, "label": choices.index(answer)}


@lru_cache(maxsize=4)
def generate(path: str, docs: int = 1000, seed: int = 0, min_words: int = 60, max_words: int = 150,
             n_choices: int = 4) -> tuple[dict, ...]:
    """`docs` documents from paragraphs of the JSON-lines file at `path` (plain or .xz), chosen by `seed`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"readcomp: corpus file {path} not found (Pile-style JSON lines, e.g. the shared "
                        f"corpus/test.jsonl.xz)")
    pool = paragraphs(path, min_words, max_words)
    rng = random.Random(seed)
    out = []
    for i in rng.sample(range(len(pool)), len(pool)):
        doc = document(pool[i], rng, n_choices)
        if doc is not None:
            out.append(doc)
            if len(out) == docs:
                break
    if not out:
        raise DataError(f"readcomp: no paragraph of {min_words}-{max_words} words in {path} makes a question")
    return tuple(out)


def dataset(path: str, docs: int = 1000, seed: int = 0, min_words: int = 60, max_words: int = 150,
            n_choices: int = 4, **_lm_eval_metadata) -> dict:
    """lm-eval's `custom_dataset`: the generated documents as its test split."""
    import datasets

    docs = generate(path=path, docs=docs, seed=seed, min_words=min_words, max_words=max_words, n_choices=n_choices)
    return {"test": datasets.Dataset.from_list(list(docs))}
