"""Side by side in one process on one GPU, random weights at the 1.5B shape, fp16, B=1: our RWKV-4,
ChatRWKV's `rwkv` package (its CUDA kernel on), transformers' GPTNeoX (Pythia-1.4B shape, SDPA,
static cache + compiled decode) and transformers' RwkvForCausalLM.

    RWKV_CUDA_ON=1 python benchmarks/compare_inference.py [--out table.csv] [--skip-chatrwkv]

Prefill: median ms to the last logits. Decode: median ms per token over 32 steps after a prefill of
that length. Peak: max allocated GiB during prefill at the longest context.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile

import torch

from rwkvbench.timing import median_ms

os.environ.setdefault("RWKV_CUDA_ON", "1")
PREFILL = [1024, 4096, 16384]
DECODE_AT = [1024, 4096, 16384]


def ms(fn, repeats=5, warmup=2):
    return median_ms(fn, "cuda", repeats, warmup)


def peak_gib(fn):
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def ids_of(T):
    return torch.randint(0, 50277, (1, T), generator=torch.Generator().manual_seed(T))


class Harness:
    name = "ours (rwkvbench RWKV-4)"  # any SequenceModel; measure() takes another name

    def __init__(self, model):
        self.m = model

    def prefill(self, ids):
        return self.m.prefill(ids.cuda(), logits="last")

    def decoder(self, ids, steps):
        logits, state = self.prefill(ids)
        state = self.m.prepare_decode(state, steps + 8)
        tok = logits.argmax(-1)

        def step():
            nonlocal state
            _, state = self.m.step(tok, state)

        return step


class ChatRWKV:
    name = "ChatRWKV rwkv 0.8.32"

    def __init__(self, sd):
        from rwkv.model import RWKV

        path = os.path.join(tempfile.mkdtemp(), "random-1b5")
        torch.save({k: v.half() if v.dim() > 1 else v for k, v in sd.items()}, path + ".pth")
        self.m = RWKV(model=path, strategy="cuda fp16", verbose=False)

    def prefill(self, ids):
        return self.m.forward(ids[0].tolist(), None)

    def decoder(self, ids, steps):
        _, state = self.prefill(ids)

        def step():
            nonlocal state
            _, state = self.m.forward([187], state)

        return step


class HFRwkv:
    name = "transformers RwkvForCausalLM"

    def __init__(self, sd, shape):
        from transformers import RwkvForCausalLM

        from rwkvbench.models import checkpoints as ck

        folder = tempfile.mkdtemp()
        ck.save_hf(sd, folder, shape, context_length=1024)
        self.m = RwkvForCausalLM.from_pretrained(folder, dtype=torch.float16).cuda().eval()

    @torch.inference_mode()
    def prefill(self, ids):
        return self.m(ids.cuda(), use_cache=True)

    def decoder(self, ids, steps):
        state = self.prefill(ids).state
        tok = torch.tensor([[187]], device="cuda")

        @torch.inference_mode()
        def step():
            nonlocal state
            state = self.m(tok, state=state, use_cache=True).state

        return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--skip-chatrwkv", action="store_true")
    args = ap.parse_args()
    from rwkvbench import load_model
    from rwkvbench.models import checkpoints as ck

    shape = ck.RWKV4Shape(24, 2048, 50277, 8192)
    rows = []

    def measure(system, prefill_lens, decode_lens, name=None):
        row = {"system": name or system.name}
        for T in prefill_lens:
            try:
                row[f"prefill_{T}_ms"] = ms(lambda: system.prefill(ids_of(T)), repeats=3, warmup=1)
            except torch.OutOfMemoryError:
                row[f"prefill_{T}_ms"] = float("nan")
        for T in decode_lens:
            step = system.decoder(ids_of(T), 40)
            row[f"decode_at_{T}_ms"] = ms(step, repeats=32, warmup=8)
        if prefill_lens and prefill_lens[-1] == PREFILL[-1]:
            row["peak_prefill_16384_gib"] = peak_gib(lambda: system.prefill(ids_of(PREFILL[-1])))
        print(row, flush=True)
        rows.append(row)

    ours = load_model("rwkv4_1b5", init="random", device="cuda", dtype="fp16")
    print(f"weights: {ours.weights_nbytes / 2**30:.2f} GiB", flush=True)
    measure(Harness(ours), PREFILL, DECODE_AT)
    rows[-1]["decode"] = ours.decode_config
    os.environ["RWKVBENCH_DECODE"] = "compiled"  # the PyTorch step compiled, for comparison
    ours._decoder = None
    measure(Harness(ours), [], DECODE_AT[:1], name="ours, compiled PyTorch decode")
    rows[-1]["decode"] = ours.decode_config
    del os.environ["RWKVBENCH_DECODE"]
    long = ids_of(1 << 20)
    row = {"system": "ours, 1M-token prefill", "prefill_1048576_ms": ms(lambda: ours.prefill(long, logits="last"), 1, 0),
           "peak_prefill_1048576_gib": peak_gib(lambda: ours.prefill(long, logits="last"))}
    print(row, flush=True)
    rows.append(row)
    sd = {k: v.detach().float().cpu() for k, v in ours.net.state_dict().items()}
    del ours
    gc.collect()
    torch.cuda.empty_cache()

    neox = load_model("pythia_1b4", init="random", device="cuda", dtype="fp16")
    neox.model.config.max_position_embeddings = 1 << 20  # random weights: allow any length (speed only)
    measure(Harness(neox), PREFILL, DECODE_AT, name="transformers GPTNeoX (Pythia-1.4B shape)")
    del neox
    gc.collect()
    torch.cuda.empty_cache()

    if not args.skip_chatrwkv:
        try:
            measure(ChatRWKV(sd), PREFILL, DECODE_AT)
        except Exception as e:  # noqa: BLE001
            print(f"ChatRWKV failed: {e}")
        gc.collect()
        torch.cuda.empty_cache()
    try:
        measure(HFRwkv(sd, shape), [1024], [1024])
    except Exception as e:  # noqa: BLE001
        print(f"transformers RWKV failed: {e}")

    import pandas as pd

    df = pd.DataFrame(rows).set_index("system")
    with pd.option_context("display.width", 250, "display.float_format", "{:.4g}".format):
        print(df.T.to_string())
    if args.out:
        df.to_csv(args.out)


if __name__ == "__main__":
    main()
