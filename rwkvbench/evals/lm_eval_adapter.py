"""lm-evaluation-harness model over any SequenceModel, registered in lm-eval's registry as "rwkvbench".

    lm_eval.simple_evaluate(model=SequenceModelLM(load_model("rwkv4_1b5")), tasks=[...])
    lm_eval.simple_evaluate(model="rwkvbench", model_args="model=rwkv4_169m,path=...,device=cuda", tasks=[...])
    rwkvbench-lm-eval --model rwkvbench --model_args model=rwkv4_169m,pretrained=CKPT.pth --tasks piqa  (lm_eval_cli)

model_args: `model` (a config name, default the rwkv4 family), `path` (or lm-eval's usual `pretrained`), any
other key of the model's config (device, dtype, init, tokenizer_path, ...), and the adapter's own
batch_size ("auto" or an int >= 1), max_batch_size, rolling_chunk, max_gen_toks.

Tokenisation and context/continuation splitting come from lm-eval's TemplateLM, as for its `hf` model.
Scoring reuses prefixes: requests that share a context (the choices of a multiple-choice question)
compute it once, then fork the state (recurrent state or KV cache) for every continuation.
Requests with a context of their own are scored as whole sequences, right-padded into batches
(harmless for causal models: padding comes after every scored position).
"""

from __future__ import annotations

import logging
import sys
from collections import defaultdict

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm.auto import tqdm

from rwkvbench import distributed
from rwkvbench.errors import ConfigError
from rwkvbench.models.base import SequenceModel

DEFAULT_BATCH_SIZE = 16
ADAPTER_ARGS = ("model", "pretrained", "batch_size", "max_batch_size", "rolling_chunk", "max_gen_toks")
# lm-eval adds these to every model's arguments (--trust_remote_code); they mean nothing for our models.
LM_EVAL_GENERIC_ARGS = ("trust_remote_code",)


def parse_batch_size(value, max_batch_size=None) -> int:
    """lm-eval's forms: an int >= 1, or "auto" / "auto:N", which here is DEFAULT_BATCH_SIZE (capped by
    max_batch_size): the adapter already scores each question's choices as one shared-prefix group, so
    it does not search for the largest batch that fits."""
    text = str(value).strip()
    if text == "auto" or text.startswith("auto:"):
        return min(DEFAULT_BATCH_SIZE, int(max_batch_size)) if max_batch_size else DEFAULT_BATCH_SIZE
    try:
        size = int(text) if not isinstance(value, bool) else 0
    except ValueError:
        size = 0
    if size < 1:
        raise ConfigError(f"batch_size={value!r}: expected 'auto' or an int >= 1")
    return size


def _lm_eval_device(device: str) -> str:
    """lm-eval's --device (default cuda:0 even on a machine without one): like lm-eval's own hf model, a
    CUDA device that is not here means the best available one; said in one line."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        print(f"rwkvbench: --device {device} is not available here (lm-eval's default is cuda:0); using auto "
              f"(cpu). Give device= in --model_args to insist.", file=sys.stderr)
        return "auto"
    return device


def interleave(parts: list):
    """Per-rank results in document order: dicts merged key by key, lists round-robin (rank r's j-th item
    is document j * len(parts) + r)."""
    first = parts[0]
    if isinstance(first, dict):  # a rank without documents (limit < W) lacks keys: it adds nothing
        keys = list(dict.fromkeys(k for p in parts for k in p))
        return {k: interleave([p[k] for p in parts if k in p]) for k in keys}
    if isinstance(first, list):
        longest = max(len(p) for p in parts)
        return [p[j] for j in range(longest) for p in parts if j < len(p)]
    return first


@register_model("rwkvbench")
class SequenceModelLM(TemplateLM):
    def __init__(self, model: SequenceModel | str | None = None, batch_size: int | str = DEFAULT_BATCH_SIZE,
                 rolling_chunk: int = 2048, max_gen_toks: int = 256, max_batch_size: int | None = None,
                 pretrained: str | None = None, **load_overrides):
        super().__init__()
        for key in LM_EVAL_GENERIC_ARGS:
            load_overrides.pop(key, None)
        if pretrained is not None:  # lm-eval's usual name for the checkpoint
            if load_overrides.get("path") not in (None, pretrained):
                raise ConfigError(f"model_args: pretrained={pretrained} and path={load_overrides['path']} disagree; "
                                  f"give one of them")
            load_overrides["path"] = pretrained
        self.batch_size = parse_batch_size(batch_size, max_batch_size)
        if model is None or isinstance(model, str):
            from rwkvbench.models.registry import check_model_keys, load_model, model_config

            name = model or "rwkv4"
            check_model_keys(load_overrides, model_config(name).get("family"), f"rwkvbench model_args (model={name})",
                             also_valid=ADAPTER_ARGS)
            place = distributed.init()  # rwkvbench-lm-eval under torchrun: one GPU per rank
            if place.world_size > 1:
                load_overrides["device"] = distributed.rank_device(load_overrides.get("device") or "auto", place)
            model = load_model(name, **load_overrides)
        elif load_overrides:
            raise ConfigError(f"model_args {sorted(load_overrides)}: the model is already loaded, so these would be "
                              f"ignored")
        self.model = model
        self._device = model.device
        # Data parallel under torchrun: lm-eval's evaluator gives each rank its share of the requests,
        # pads the shares even and gathers the per-document metrics on rank 0 through the methods below.
        self.accelerator = distributed.Accelerator(model.device)
        self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.rolling_chunk = int(rolling_chunk)
        self.max_gen_toks = int(max_gen_toks)
        self.stats = {"tokens_computed": 0, "prefix_tokens_saved": 0}

    # ---- lm-eval's data-parallel contract (identity for one process) --------------------------------
    def all_gather(self, tensor):
        return distributed.all_gather(tensor)

    def gather_object(self, obj, dst=0):
        """lm-eval gathers each rank's per-document results ({task: {metric: [values]}}, and logged
        samples) and chains the ranks' lists. Rank r held documents r, r + W, r + 2W, ... (lm-eval's
        doc_iterator), so we hand back one entry with the lists interleaved into document order: order-
        dependent statistics (a bootstrap stderr) then match one process exactly."""
        parts = distributed.gather_object(obj, dst=dst)
        return None if parts is None else [interleave(parts)]

    def barrier(self) -> None:
        distributed.barrier()

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        """lm-eval's command line and simple_evaluate: model_args plus its own batch_size / max_batch_size /
        device. A key given in model_args wins (lm-eval's default would otherwise pass `device` twice)."""
        args = dict(arg_dict)
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        if "device" in extra and "device" not in args:
            args["device"] = _lm_eval_device(extra["device"])
        extra.pop("device", None)
        for key, value in extra.items():
            args.setdefault(key, value)
        return cls(**args)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    # ---- tokenizer --------------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.model.tokenizer.eos_token_id

    def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
        return self.model.tokenizer.encode(string)

    def tok_decode(self, tokens) -> str:
        return self.model.tokenizer.decode(list(tokens))

    # ---- scoring ----------------------------------------------------------------------------------
    def _fit(self, context: list[int], continuation: list[int]) -> list[int]:
        """Drop the oldest context tokens where the model's window is bounded (as lm-eval's hf does)."""
        limit = self.model.max_context
        if limit is None or len(context) + len(continuation) <= limit + 1:
            return context
        return context[len(context) + len(continuation) - limit - 1:]

    @torch.inference_mode()
    def _score_sequences(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Whole sequences (context + continuation), right-padded: one prefill per batch."""
        tokens = [c + x for c, x in pairs]
        width = max(len(t) for t in tokens) - 1
        ids = [t[:-1] + [self.eot_token_id] * (width - len(t) + 1) for t in tokens]
        logits, _ = self.model.prefill(self.model.as_ids(ids))
        self.stats["tokens_computed"] += len(ids) * width
        rows = [row for row, (_, cont) in enumerate(pairs) for _ in cont]
        pos = [len(ctx) - 1 + j for ctx, cont in pairs for j in range(len(cont))]
        return _score(logits[torch.tensor(rows), torch.tensor(pos)], [cont for _, cont in pairs])

    @torch.inference_mode()
    def _score_shared_context(self, context: list[int], continuations: list[list[int]]) -> list[tuple[float, bool]]:
        """One context, many continuations: prefill the context once, fork its state for each."""
        m = self.model
        last, state = m.prefill(m.as_ids([context]), logits="last")  # predicts each continuation's first token
        self.stats["tokens_computed"] += len(context)
        self.stats["prefix_tokens_saved"] += (len(continuations) - 1) * len(context)
        width = max(len(c) for c in continuations) - 1
        if width == 0:
            return _score(last.expand(len(continuations), -1), continuations)
        ids = [c[:-1] + [self.eot_token_id] * (width - len(c) + 1) for c in continuations]
        rest, _ = m.prefill(m.as_ids(ids), m.repeat_state(state, len(continuations)))
        self.stats["tokens_computed"] += len(ids) * width
        # rows of [last; rest flattened]: continuation i's j-th token is predicted by last (j = 0) or
        # by rest[i, j - 1]
        table = torch.cat([last, rest.reshape(-1, rest.shape[-1])])
        index = [0 if j == 0 else 1 + i * width + j - 1 for i, c in enumerate(continuations) for j in range(len(c))]
        return _score(table[torch.tensor(index, device=table.device)], continuations)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        groups: dict[tuple, list[int]] = defaultdict(list)
        fitted, first = [], {}  # first: each distinct request's index; a repeat (lm-eval's padding of a
        copies = {}             # data-parallel rank's share) is scored once, on the path of the first
        for i, (_, ctx, cont) in enumerate(requests):
            ctx = self._fit(list(ctx), list(cont))
            fitted.append((ctx, list(cont)))
            key = (tuple(ctx), tuple(cont))
            if key in first:
                copies[i] = first[key]
                continue
            first[key] = i
            groups[tuple(ctx)].append(i)
        results: list = [None] * len(requests)
        shared = [idx for idx in groups.values() if len(idx) > 1]
        single = sorted((idx[0] for idx in groups.values() if len(idx) == 1),
                        key=lambda i: -len(fitted[i][0]) - len(fitted[i][1]))  # longest first, like lm-eval
        bar = tqdm(total=len(requests), desc=f"loglikelihood {self.model.name}", disable=disable_tqdm)
        for idx in shared:
            ctx = fitted[idx[0]][0]
            for i, r in zip(idx, self._score_shared_context(ctx, [fitted[i][1] for i in idx])):
                results[i] = r
            bar.update(len(idx))
        for lo in range(0, len(single), self.batch_size):
            batch = single[lo : lo + self.batch_size]
            for i, r in zip(batch, self._score_sequences([fitted[i] for i in batch])):
                results[i] = r
            bar.update(len(batch))
        for i, j in copies.items():
            results[i] = results[j]
        bar.update(len(copies))
        bar.close()
        return results

    @torch.inference_mode()
    def _rolling_with_state(self, tokens: list[int]) -> float:
        """Exact full-context log-likelihood of a document, fed in chunks with the state carried."""
        inputs, total, state = [self.prefix_token_id] + tokens[:-1], 0.0, None
        for lo in range(0, len(tokens), self.rolling_chunk):
            chunk, target = inputs[lo : lo + self.rolling_chunk], tokens[lo : lo + self.rolling_chunk]
            logits, state = self.model.prefill(self.model.as_ids([chunk]), state)
            logp = torch.log_softmax(logits[0], dim=-1)
            total += logp.gather(-1, torch.tensor(target, device=logp.device)[:, None]).sum().item()
            self.stats["tokens_computed"] += len(chunk)
        return total

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for req in tqdm(requests, desc=f"rolling {self.model.name}", disable=disable_tqdm):
            tokens = self.tok_encode(req.args[0])
            if not tokens:
                out.append(0.0)
            elif self.model.max_context is None:
                out.append(self._rolling_with_state(tokens))
            else:  # bounded window: lm-eval's disjoint rolling windows
                windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                    tokens, self.prefix_token_id, self.model.max_context, context_len=1)]
                scores = self._loglikelihood_tokens([(None, c, x) for c, x in windows], disable_tqdm=True)
                out.append(sum(s for s, _ in scores))
        return out

    @torch.inference_mode()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in tqdm(requests, desc=f"generate {self.model.name}", disable=disable_tqdm):
            context, gen_kwargs = req.args
            until = gen_kwargs.get("until", [self.tok_decode([self.eot_token_id])])
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))
            ctx = self._fit(self.tok_encode(context) or [self.prefix_token_id], [0] * max_new)
            logits, state = self.model.prefill(self.model.as_ids([ctx]), logits="last")
            generated: list[int] = []
            text = ""
            for _ in range(max_new):
                tok = int(logits[0].argmax())
                if tok == self.eot_token_id:
                    break
                generated.append(tok)
                text = self.tok_decode(generated)
                if any(s and s in text for s in until):
                    break
                logits, state = self.model.step(torch.tensor([tok], device=self.model.device), state)
            for s in until:
                if s and s in text:
                    text = text.split(s)[0]
            out.append(text)
        return out


class _DropNoise(logging.Filter):
    """lm-eval's warning that our explicit num_fewshot overrides a task's default, once per task per model."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Overwriting default num_fewshot")


def _git_hash_quietly():
    """lm-eval records `git describe` of the working directory; outside a repository git prints
    'fatal: not a git repository' for every task of every model. Same value, no stray line."""
    import subprocess

    try:
        out = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def quiet_git_probe() -> None:
    import lm_eval.evaluator

    if hasattr(lm_eval.evaluator, "get_git_commit_hash"):
        lm_eval.evaluator.get_git_commit_hash = _git_hash_quietly


def quiet_lm_eval() -> None:
    """lm-eval logs at WARNING and above, without the two messages it repeats per task per model."""
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    evaluator_log = logging.getLogger("lm_eval.evaluator")
    if not any(isinstance(f, _DropNoise) for f in evaluator_log.filters):
        evaluator_log.addFilter(_DropNoise())
    quiet_git_probe()


def _score(logits: torch.Tensor, continuations: list[list[int]]) -> list[tuple[float, bool]]:
    """logits: one row per continuation token, all continuations one after another. Per continuation:
    the sum of its tokens' log-probabilities and whether greedy decoding would produce it. One
    device-to-host copy for the whole batch."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    target = torch.tensor([t for c in continuations for t in c], device=logp.device)
    which = torch.repeat_interleave(torch.tensor([len(c) for c in continuations], device=logp.device))
    token_logp = logp.gather(-1, target[:, None])[:, 0].double()
    misses = (logp.argmax(-1) != target).int()
    n = len(continuations)
    totals = torch.zeros(n, dtype=torch.float64, device=logp.device).index_add_(0, which, token_logp)
    wrong = torch.zeros(n, dtype=torch.int32, device=logp.device).index_add_(0, which, misses)
    return [(total, not w) for total, w in zip(totals.tolist(), wrong.tolist())]
