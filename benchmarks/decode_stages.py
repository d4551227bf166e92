"""Our fused RWKV-4 decode kernel stage by stage at the 1.5B shape (random weights): median time per
stage and the weight-read bandwidth it reaches, then the whole captured step against the floor of
reading every weight once.

    python benchmarks/decode_stages.py [--batch 1] [--dtype fp16] [--bandwidth 2.9e12] [--compiled] [--define K=V]

--compiled also times the compiled PyTorch step (GraphDecoder) at the same batch, for comparison.

Each kind of stage is timed as a program of its 24 layers' stages (one launch, a grid barrier between
stages as in the real step; distinct weights per stage, so nothing is served from the 50 MB L2),
divided by the layer count.
"""

from __future__ import annotations

import argparse

import torch

from rwkvbench import load_model
from rwkvbench.kernels.decode_cuda import DecodeProgram
from rwkvbench.models.rwkv4_decode import FusedDecoder, GraphDecoder
from rwkvbench.timing import median_ms


def graph_of(fn):
    fn()  # warm (and the kernels' one-time attribute setup) outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def nbytes(*linears):
    return sum(m.weight.numel() * m.weight.element_size() for m in linears)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="fp16")
    ap.add_argument("--compiled", action="store_true")
    ap.add_argument("--define", action="append", default=[], help="build a variant of the kernel's knobs, e.g. RWKV4_DECODE_UNROLL=4")
    ap.add_argument("--bandwidth", type=float, default=2.9e12, help="bytes/s of the GPU's memory (H100 SXM ~2.9e12 measured)")
    args = ap.parse_args()
    model = load_model("rwkv4_1b5", init="random", device="cuda", dtype=args.dtype)
    net = model.net
    tok = torch.zeros(args.batch, 1, dtype=torch.long, device="cuda")
    with torch.inference_mode():
        dec = FusedDecoder(net, args.batch)
        if args.define:
            dec.program = DecodeProgram(dec.program.stages, tok.device, args.define)
            dec._capture(dec._step)
        stages = [dec.layer_stages(i, b) for i, b in enumerate(net.blocks)]
        att, ffn, L = net.blocks[0].att, net.blocks[0].ffn, len(net.blocks)
        names = ["ln1+shift -> k, v, r -> wkv -> output", "ln2+shift -> ffn k, r -> ffn value"]
        sizes = [nbytes(att.key, att.value, att.receptance, att.output), nbytes(ffn.key, ffn.receptance, ffn.value)]
        print(f"batch {args.batch}, {args.dtype}; floor = bytes / {args.bandwidth / 1e12:.2f} TB/s")
        total = 0.0
        for j, (name, size) in enumerate(zip(names, sizes)):
            g = graph_of(DecodeProgram([stages[i][j] for i in range(L)], tok.device, args.define))
            us = median_ms(g.replay, "cuda", 50, 5) * 1e3 / L
            total += us * L
            print(f"  {name:42s} {us:7.2f} us  {size / 1e6:6.1f} MB  {size / us / 1e3:6.0f} GB/s  floor {size / args.bandwidth * 1e6:6.2f} us")
        g = graph_of(DecodeProgram([dec.head_stage()], tok.device, args.define))
        us = median_ms(g.replay, "cuda", 50, 5) * 1e3
        size = nbytes(net.head)
        total += us
        print(f"  {'ln_out -> head':42s} {us:7.2f} us  {size / 1e6:6.1f} MB  {size / us / 1e3:6.0f} GB/s  floor {size / args.bandwidth * 1e6:6.2f} us")
        step = median_ms(lambda: dec.step(tok), "cuda", 200, 20)
        floor = model.weights_nbytes / args.bandwidth * 1e3
        print(f"sum of stages {total / 1e3:.3f} ms; whole step (graph replay + logits copy) {step:.3f} ms; "
              f"floor {floor:.3f} ms ({model.weights_nbytes / 2**30:.2f} GiB of weights)")
        if args.compiled:
            del dec, stages
            dec = GraphDecoder(net, args.batch)
            print(f"compiled PyTorch step ({dec.config}): {median_ms(lambda: dec.step(tok), 'cuda', 200, 20):.3f} ms")


if __name__ == "__main__":
    main()
