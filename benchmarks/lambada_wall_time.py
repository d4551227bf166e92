"""Full LAMBADA (lambada_openai, 5153 documents) wall time at the 1.5B shape, random weights, fp16, on one
GPU: our RWKV-4 and Pythia-1.4B shape through our lm-eval adapter, and the same Transformer through
lm-eval's own `hf` model. Then the prefix-reuse saving on HellaSwag-shaped requests (one context,
four endings).

    python benchmarks/lambada_wall_time.py DATA_DIR TOKENIZER_JSON
"""

import sys
import time

import lm_eval
import torch

from rwkvbench import load_model
from rwkvbench.evals.lm_eval_adapter import SequenceModelLM
from rwkvbench.evals.lm_eval_tasks import resolve_task


def timed(lm, task):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = lm_eval.simple_evaluate(model=lm, tasks=[task], bootstrap_iters=0, log_samples=False, verbosity="ERROR")
    torch.cuda.synchronize()
    r = res["results"]["lambada_openai"]
    return time.perf_counter() - t0, r["acc,none"], r["perplexity,none"], res["n-samples"]["lambada_openai"]["effective"]


def main(data_dir, tokenizer_json):
    from lm_eval.tasks import TaskManager
    from transformers import PreTrainedTokenizerFast

    task = resolve_task("lambada_openai", data_dir=data_dir)
    TaskManager(include_defaults=False)
    rwkv = load_model("rwkv4_1b5", init="random", dtype="fp16", device="cuda")
    lm = SequenceModelLM(rwkv, batch_size=32)
    print("ours RWKV-4 1.5B: %.1f s, acc %.4f, ppl %.4g, n %d" % timed(lm, task), flush=True)
    ctx = " ".join(["A man is standing on a ladder next to a house and"] * 4)
    endings = [" he paints the wall blue.", " a dog barks at the mailman.", " she climbs down slowly.",
               " the ladder falls over."]
    from lm_eval.api.instance import Instance

    lm.stats = {"tokens_computed": 0, "prefix_tokens_saved": 0}
    lm.loglikelihood([Instance("loglikelihood", {}, (f"{ctx} {i}", e), 0) for i in range(100) for e in endings],
                     disable_tqdm=True)
    s = lm.stats
    print(f"HellaSwag-shaped (100 contexts x 4 endings): computed {s['tokens_computed']}, saved "
          f"{s['prefix_tokens_saved']} ({100 * s['prefix_tokens_saved'] / (s['tokens_computed'] + s['prefix_tokens_saved']):.1f}%)",
          flush=True)
    del rwkv, lm
    torch.cuda.empty_cache()
    neox = load_model("pythia_1b4", init="random", dtype="fp16", device="cuda")
    print("ours adapter, Pythia-1.4B shape: %.1f s, acc %.4f, ppl %.4g, n %d" % timed(SequenceModelLM(neox, batch_size=32), task), flush=True)
    from lm_eval.models.huggingface import HFLM

    tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer_json, eos_token="<|endoftext|>")
    print("lm-eval hf, same Transformer: %.1f s, acc %.4f, ppl %.4g, n %d" % timed(HFLM(pretrained=neox.model, tokenizer=tok, batch_size=32), task), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
