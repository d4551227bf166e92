"""Phone book (Jelassi et al. 2024, "Repeat After Me"): as many "Name: number" lines as fit the context,
two of them again as few-shot examples, then a third name; the model must give its number (and end the
line). Several queries ask the same book, which is prefilled once and forked for them."""

from __future__ import annotations

import numpy as np

from rwkvbench.evals.probes import Probe, probe
from rwkvbench.evals.probes.items import Answer, Item, encode, infix, rng_for
from rwkvbench.units import SkipUnit


@probe("phonebook")
class PhoneBook(Probe):
    keys = ("books", "queries_per_book")

    reported = ("entries",)

    def __init__(self, tokenizer, fmt, task):
        super().__init__(tokenizer, fmt, task)
        self.names = [f"{first} {last}" for first in fmt["first_names"] for last in fmt["last_names"]]
        self.books, self.queries = int(task.books), int(task.queries_per_book)
        self.fewshot = int(fmt["fewshot"])
        self.line_sep, self.fewshot_sep = fmt["line_separator"], fmt["fewshot_separator"]
        # Most tokens one line can take: the longest name's part and at most a token per digit.
        longest = max(len(encode(tokenizer, self.entry(name, "")[0])) for name in self.names)
        self.max_line = longest + 1 + int(fmt["number_digits"]) + len(infix(tokenizer, self.line_sep))
        # Room kept after the book: the few-shot lines, the query and its answer, their separators.
        self.reserve = (self.fewshot + 1) * self.max_line + 2 * len(infix(tokenizer, self.fewshot_sep))

    def variants(self) -> list[dict]:
        return [{"fewshot": self.fewshot}]

    def entry(self, name: str, number: str) -> tuple[str, str]:
        """The line's query part ("Name:") and its answer (" number"): the line split before the number,
        a space before it going with the number, as the tokenizer attaches it."""
        line = self.fmt["entry"].format(name=name, number=number)
        cut = len(line) - len(number) if number else len(line)
        query = line[:cut].rstrip(" ")
        return query, line[len(query) :]

    def unfit(self, context_len, variant):
        if context_len - self.reserve < (self.fewshot + 1) * self.max_line:
            return (f"context_len={context_len} holds fewer than the {self.fewshot + 1} entries a query needs "
                    f"(at most {self.max_line} tokens each, {self.reserve} kept for the query)")
        return None

    def number(self, rng) -> str:
        first = self.fmt["number_first_digits"]
        digits = [first[rng.integers(len(first))]] + [str(d) for d in rng.integers(0, 10, int(self.fmt["number_digits"]) - 1)]
        return "".join(digits)

    def book(self, context_len: int, rng) -> list[tuple[str, str]]:
        """Entries (query, answer) in book order, as many as fit context_len with the reserve kept."""
        room = context_len - self.reserve
        entries, used = [], 0
        for i in rng.permutation(len(self.names)):  # no name twice
            query, answer = self.entry(self.names[i], self.number(rng))
            cost = len(encode(self.tokenizer, query + answer + self.line_sep))
            if used + cost > room:
                return entries
            entries.append((query, answer))
            used += cost
        raise SkipUnit(f"context_len={context_len} holds more entries than the {len(self.names)} names "
                       f"(first_names x last_names of the phonebook format)")

    def items(self, context_len, variant, seed):
        rng = rng_for(seed, "phonebook", context_len)
        out = []
        for b in range(self.books):
            entries = self.book(context_len, rng)
            text = self.line_sep.join(q + a for q, a in entries)
            for _ in range(self.queries):
                *shots, asked = rng.choice(len(entries), self.fewshot + 1, replace=False)
                fewshot = self.line_sep.join(entries[i][0] + entries[i][1] for i in shots)
                prompt = text + self.fewshot_sep + fewshot + self.fewshot_sep + entries[asked][0]
                prompt_ids = encode(self.tokenizer, prompt)
                ids = encode(self.tokenizer, prompt + entries[asked][1] + self.line_sep)
                if not np.array_equal(ids[: len(prompt_ids)], prompt_ids):
                    raise ValueError(f"phonebook: the tokenizer merges the query {entries[asked][0]!r} with its answer")
                answer = ids[len(prompt_ids) :]
                out.append(Item(ids[:-1], [Answer(len(prompt_ids) - 1, answer)], group=b,
                                meta={"entries": len(entries)}))
        return out
