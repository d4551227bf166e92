"""One training run: a family at a size and learning rate, for a token budget, on a corpus.

Each step feeds one batch of context windows (gradient accumulation over micro-batches when asked),
under bf16 autocast on CUDA, through the fused head + cross-entropy (train/loss.py), then clips the
gradient norm and takes an AdamW step on the warm-up + cosine schedule. At log-spaced points along the
run it measures the validation loss and appends tidy rows (suite=train): loss, val_loss, tokens, flops,
flops_nonembedding, epochs, lr, tokens_per_s and mfu (CUDA). Checkpoints are written every few minutes
(and at a deadline); a rerun resumes from the last one. At the end the weights are saved in the
harness's format with a model config beside them, and a `finished` row marks the run done.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from rwkvbench import distributed
from rwkvbench.models.base import device_name
from rwkvbench.results import ResultsWriter
from rwkvbench.train import rows
from rwkvbench.train.checkpoint import load_checkpoint, save_checkpoint
from rwkvbench.train.data import Corpus, check_epochs
from rwkvbench.train.families import Trainable, get_family, padded_vocab
from rwkvbench.train.loss import _chunk, chunk_fn_for, linear_cross_entropy, token_nll
from rwkvbench.train.optim import lr_factor, make_optimizer, set_lr

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class RunSpec:
    """Everything that decides a run's numbers (and the options that only decide its speed)."""

    family: str
    size: str
    n_layer: int
    n_embd: int
    tokens: int
    batch_size: int
    lr: float
    recipe: dict
    context_len: int = 1024
    seed: int = 0
    # speed only
    micro_batch_size: int | None = None
    precision: str = "bf16"
    compile: bool = True
    compile_mode: str | None = None  # torch.compile's; "reduce-overhead" replays each compiled part as a CUDA graph
    loss_chunk: int = 8192
    # measurement and output
    eval_points: int = 10
    eval_first: float = 0.05
    eval_tokens: int | None = None
    eval_batch_size: int = 32
    checkpoint_every_s: float = 300.0
    checkpoint_every_steps: int = 0
    keep_checkpoint: bool = False
    export_weights: bool = True
    export_dtype: str = "fp32"
    peak_tflops: float = 989.0
    max_epochs: float = 2.0

    @property
    def name(self) -> str:
        return f"{self.family}_{self.size}"

    @property
    def tag(self) -> str:
        return f"lr={self.lr:g}"

    @property
    def run_dir_name(self) -> str:
        return f"{self.name}_lr{self.lr:g}"

    @property
    def steps(self) -> int:
        return max(1, round(self.tokens / (self.batch_size * self.context_len)))

    def eval_steps(self) -> list[int]:
        """Steps after which the validation loss is measured: log-spaced from eval_first of the run to
        its end (a power law is a line in log-log)."""
        first = max(1, round(self.eval_first * self.steps))
        n = max(1, self.eval_points)
        points = {round(first * (self.steps / first) ** (i / max(1, n - 1))) for i in range(n)}
        return sorted(points | {self.steps})

    def identity(self) -> dict:
        """What a checkpoint must match to be resumed (the speed options may change between attempts)."""
        keys = ("family", "size", "n_layer", "n_embd", "tokens", "batch_size", "lr", "recipe", "context_len", "seed")
        return {k: v for k, v in asdict(self).items() if k in keys}


def _micro_batches(batch: torch.Tensor, micro: int | None):
    micro = micro or len(batch)
    if len(batch) % micro:
        raise ValueError(f"micro_batch_size={micro} must divide batch_size={len(batch)}")
    return batch.split(micro)


CLOCK_STEPS = 16  # data parallel: how often the ranks share rank 0's deadline and checkpoint clock


def _to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch copied to the GPU without stopping the host: from page-locked memory the copy is queued
    behind the running step. (From pageable memory the host waits until the GPU is idle, and the GPU then
    waits while the host queues the next step's kernels. With it, RWKV-4's in-run s7 tokens/s on an H200,
    510K, was no lower than train_throughput.py's steady state with the same kernels: 468K on real text,
    506K on random ids.)"""
    if device.type != "cuda":
        return batch
    return batch.pin_memory().to(device, non_blocking=True)


def batches_ahead(windows, first: int, last: int, batch_size: int, device: torch.device):
    """The run's batches first .. last - 1 on `device`, each fetched and queued one step ahead."""
    ahead = _to_device(windows.batch(first, batch_size), device) if first < last else None
    for i in range(first, last):
        current = ahead
        ahead = _to_device(windows.batch(i + 1, batch_size), device) if i + 1 < last else None
        yield current


def rank_share(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's rows of the global batch: B / W consecutive windows."""
    if len(batch) % world_size:
        raise ValueError(f"batch_size={len(batch)} must be a multiple of the {world_size} data-parallel ranks")
    n = len(batch) // world_size
    return batch[rank * n : (rank + 1) * n]


def _sum_over_ranks(tensors: list[torch.Tensor]) -> None:
    """All-reduce (sum) in flat buffers: one collective per step, not one per parameter."""
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():  # one buffer per dtype (fp32 master weights: one in all)
        flat = _flatten_dense_tensors(group)
        torch.distributed.all_reduce(flat)
        for t, reduced in zip(group, _unflatten_dense_tensors(flat, group)):
            t.copy_(reduced)


def train_step(model: Trainable, optimizer, batch: torch.Tensor, device, *, micro_batch_size: int | None,
               amp_dtype: torch.dtype, loss_chunk: int, l2wrap: float, grad_clip: float, chunk_fn=_chunk,
               loss_fn=linear_cross_entropy, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """One optimizer step on a (B, T + 1) batch of token windows; returns the batch's mean loss (on the
    device, not synchronised). Data parallel (world_size > 1): each rank runs its B / W windows, weighted
    by their share of the global batch, and the gradients are summed over the ranks before clipping, so
    every rank takes the step one process takes with the whole batch."""
    if device.type == "cuda":  # a new step for CUDA graph trees: last step's graph outputs may be overwritten
        torch.compiler.cudagraph_mark_step_begin()
    total = torch.zeros((), device=device)
    mine = batch if world_size == 1 else rank_share(batch, rank, world_size)
    for part in _micro_batches(mine, micro_batch_size):
        part = part.to(device, non_blocking=True)
        with _autocast(device, amp_dtype):
            x = model.features(part[:, :-1])
        loss = loss_fn(x, model.head_weight, part[:, 1:], chunk=loss_chunk, l2wrap=l2wrap, dtype=amp_dtype,
                       chunk_fn=chunk_fn)
        weight = len(part) / len(batch)
        (loss * weight).backward()
        total += loss.detach() * weight
    if world_size > 1:
        _sum_over_ranks([p.grad for p in model.module.parameters() if p.grad is not None] + [total])
    torch.nn.utils.clip_grad_norm_(model.module.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def validation_loss(model: Trainable, corpus: Corpus, spec: RunSpec, device, amp_dtype) -> float:
    """Mean per-token loss over the validation stream cut as the perplexity task cuts it (windows of
    context_len + 1 tokens overlapping by one, each from an empty state), first eval_tokens only."""
    from rwkvbench.evals.perplexity import windows

    ids = corpus.valid if spec.eval_tokens is None else corpus.valid[: spec.eval_tokens + 1]
    groups: dict[int, list] = {}
    for w in windows(ids.tolist(), spec.context_len):
        groups.setdefault(len(w), []).append(w)
    total, count = 0.0, 0
    # eager: a compiled block would compile a second (no-grad) graph for this
    with torch.no_grad(), torch.compiler.set_stance("force_eager"), _autocast(device, amp_dtype):
        for group in groups.values():
            for i in range(0, len(group), spec.eval_batch_size):
                batch = torch.tensor(group[i : i + spec.eval_batch_size], device=device)
                x = model.features(batch[:, :-1])
                nll = token_nll(x, model.head_weight, batch[:, 1:], chunk=spec.loss_chunk, dtype=amp_dtype)
                total += nll.double().sum().item()
                count += nll.numel()
    return total / count


def _autocast(device, dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def train_run(spec: RunSpec, corpus: Corpus, out_dir, writer: ResultsWriter, device: torch.device,
              deadline: float | None = None) -> bool:
    """Train (or resume) one run; True when it finished, False when it stopped at `deadline`
    (time.monotonic() seconds) after writing a checkpoint."""
    t_start = time.monotonic()
    place = distributed.env()  # under torchrun: each rank trains on its share of every batch, rank 0 writes
    main = place.is_main
    run_dir = Path(out_dir) / "runs" / spec.run_dir_name
    run_dir.mkdir(parents=True, exist_ok=True)
    check_epochs(spec.tokens, corpus.windows, spec.max_epochs, f"{spec.name} ({spec.tag})")
    torch.manual_seed(spec.seed)
    model = get_family(spec.family)(spec.recipe, {"n_layer": spec.n_layer, "n_embd": spec.n_embd},
                                    padded_vocab(corpus.tokenizer.vocab_size), spec.seed, device,
                                    eos_token_id=corpus.tokenizer.eos_token_id)
    on_gpu = device.type == "cuda"
    amp_dtype = DTYPES[spec.precision] if on_gpu else torch.float32
    if spec.compile and on_gpu:
        # A fresh compile per run: dynamo's cache is keyed by function, so the next size's shapes would
        # otherwise recompile block_step with symbolic sizes, whose backward returned a (C,) gradient
        # for a (1, 1, C) mix on torch 2.11 (seen on an H200).
        torch._dynamo.reset()
        model.compile(spec.compile_mode)
    chunk_fn = chunk_fn_for(device, spec.compile)
    optimizer = make_optimizer(model, OmegaConf.create(spec.recipe), spec.lr, device)
    recipe = spec.recipe
    ckpt = run_dir / "checkpoint.pt"
    step, progress = 0, {"loss_sum": 0.0, "loss_steps": 0, "wall_s": 0.0}
    if ckpt.is_file():
        step, progress = load_checkpoint(ckpt, model.module, optimizer, spec.identity())
        print(f"[rwkvbench.train] {spec.name} {spec.tag}: resuming at step {step} of {spec.steps}")

    common = {"model": spec.name, "family": model.kind, "n_params": model.n_params(),
              "dtype": str(amp_dtype).removeprefix("torch.").replace("bfloat16", "bf16").replace("float32", "fp32"),
              "device": device.type, "device_name": device_name(device), "checkpoint": str(run_dir.resolve()),  # its weights
              "suite": rows.SUITE, "task": corpus.name, "context_len": spec.context_len,
              "batch_size": spec.batch_size}
    tokens_per_step = spec.batch_size * spec.context_len
    compute = model.compute_per_token(spec.context_len)
    compute_nonemb = model.compute_nonembedding_per_token(spec.context_len)
    matmul_flops = model.matmul_flops_per_token(spec.context_len)
    evals = set(spec.eval_steps())
    loss_sum = torch.zeros((), device=device)
    timed = {"s": 0.0, "tokens": 0, "mark": None, "from_step": step + 2}  # the first two steps compile

    def sync():
        if on_gpu:
            torch.cuda.synchronize()

    def checkpoint(at: int):
        progress["loss_sum"] += loss_sum.item()
        loss_sum.zero_()
        wall = progress["wall_s"] + time.monotonic() - t_start  # this attempt's time so far, and the earlier ones'
        if main:
            save_checkpoint(ckpt, model.module, optimizer, at, spec.identity(), {**progress, "wall_s": wall})

    def measure(at: int, lr: float) -> dict:
        sync()
        if timed["mark"] is not None:
            timed["s"] += time.perf_counter() - timed["mark"]
        tokens_per_s = timed["tokens"] / timed["s"] if timed["s"] > 0 else float("nan")
        progress["loss_sum"] += loss_sum.item()
        loss_sum.zero_()
        model.module.eval()
        val = validation_loss(model, corpus, spec, device, amp_dtype)
        model.module.train()
        tokens = at * tokens_per_step
        out = [{"metric": "loss", "value": progress["loss_sum"] / max(1, progress["loss_steps"])},
               {"metric": "val_loss", "value": val},
               {"metric": "tokens", "value": float(tokens)},
               {"metric": "flops", "value": tokens * compute},
               {"metric": "flops_nonembedding", "value": tokens * compute_nonemb},
               {"metric": "epochs", "value": tokens / corpus.windows.tokens_per_epoch},
               {"metric": "lr", "value": lr}]
        if math.isfinite(tokens_per_s):
            out.append({"metric": "tokens_per_s", "value": tokens_per_s})
            if on_gpu:
                out.append({"metric": "mfu", "value": tokens_per_s * matmul_flops / (spec.peak_tflops * 1e12)})
        if main:
            writer.append(out, **common, variant=spec.tag, step=at)
        progress["loss_sum"], progress["loss_steps"] = 0.0, 0
        timed.update(s=0.0, tokens=0, mark=None)
        if at >= timed["from_step"]:
            sync()
            timed["mark"] = time.perf_counter()
        return {"val": val, "tok/s": tokens_per_s}

    last_ckpt = time.monotonic()
    lr = spec.lr
    bar = tqdm(total=spec.steps, initial=step, desc=f"{spec.name} {spec.tag}", leave=False, mininterval=2.0,
               disable=not main)
    batches = batches_ahead(corpus.windows, step, spec.steps, spec.batch_size, device)
    while step < spec.steps:
        if step == timed["from_step"]:
            sync()
            timed["mark"] = time.perf_counter()
        lr = spec.lr * lr_factor(step, spec.steps, recipe["warmup"], recipe["min_lr_ratio"])
        set_lr(optimizer, lr)
        batch = next(batches)
        loss_sum += train_step(model, optimizer, batch, device, micro_batch_size=spec.micro_batch_size,
                               amp_dtype=amp_dtype, loss_chunk=spec.loss_chunk, l2wrap=float(recipe.get("l2wrap", 0.0)),
                               grad_clip=float(recipe["grad_clip"]), chunk_fn=chunk_fn, rank=place.rank,
                               world_size=place.world_size)
        step += 1
        progress["loss_steps"] += 1
        if timed["mark"] is not None:
            timed["tokens"] += tokens_per_step
        bar.update(1)
        if step in evals:
            got = measure(step, lr)
            speed = f"{got['tok/s'] / 1e3:.0f}K tok/s" + (
                f" MFU {got['tok/s'] * matmul_flops / (spec.peak_tflops * 1e12):.1%}" if on_gpu else "")
            bar.write(f"[rwkvbench.train] {spec.name} {spec.tag}: step {step}/{spec.steps}, "
                      f"{step * tokens_per_step / 1e6:.2f}M tokens, val {got['val']:.4f}, {speed}")
        step_due = bool(spec.checkpoint_every_steps and step % spec.checkpoint_every_steps == 0)
        out_of_time = deadline is not None and time.monotonic() > deadline
        due = step_due or time.monotonic() - last_ckpt > spec.checkpoint_every_s
        if place.world_size > 1:  # every rank stops at the same step: rank 0's clock decides, every
            # CLOCK_STEPS steps (a collective of a Python object each step would make each rank wait for its GPU)
            if step % CLOCK_STEPS == 0:
                out_of_time, due = distributed.broadcast_object((out_of_time, due))
            else:
                out_of_time, due = False, step_due
        if step < spec.steps and (due or out_of_time):
            checkpoint(step)
            last_ckpt = time.monotonic()
        if step < spec.steps and out_of_time:
            bar.close()
            print(f"[rwkvbench.train] {spec.name} {spec.tag}: deadline reached at step {step} of {spec.steps}; "
                  f"checkpoint {ckpt} (run again to resume)")
            return False
    bar.close()
    if main:
        _finish(spec, model, corpus, run_dir, writer, common, progress["wall_s"] + time.monotonic() - t_start)
        if ckpt.is_file() and not spec.keep_checkpoint:
            ckpt.unlink()
    distributed.barrier()
    return True


def _finish(spec: RunSpec, model: Trainable, corpus: Corpus, run_dir: Path, writer, common: dict, wall_s: float):
    """Weights in the harness's format, the model config beside them, the summary rows."""
    if spec.export_weights:
        weights = model.save(run_dir, DTYPES[spec.export_dtype])
        cfg = model.model_config(spec.name, weights.resolve(), corpus.tokenizer_name, corpus.tokenizer_path)
        OmegaConf.save(OmegaConf.create(cfg), run_dir / "model.yaml")
    writer.append([{"metric": "n_layer", "value": float(spec.n_layer)}, {"metric": "n_embd", "value": float(spec.n_embd)},
                   {"metric": "params_total", "value": float(model.n_params())},
                   {"metric": "params_nonembedding", "value": float(model.n_params_nonembedding())},
                   {"metric": "wall_s", "value": wall_s},
                   {"metric": "finished", "value": 1.0}], **common, variant=spec.tag, step=spec.steps)
    print(f"[rwkvbench.train] {spec.name} {spec.tag}: finished {spec.steps} steps in {wall_s:.0f} s -> {run_dir}")
