"""From the config to runs: one run, or the matched ladder (learning-rate sweep at the first size, then
every size, both families at each before the next size), skipping runs whose `finished` row exists and
resuming unfinished ones.

With a deadline (deadline_s, for machines lent by the call) a run starts only when its estimated time
fits what is left; the ladder stops cleanly otherwise, and the same command run again (with the results
folder carried over) continues where it stopped. Estimates come from measured tokens/s: this results
folder's own rows, else benchmarks/train_throughput.py's CSV, else an assumed MFU.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from rwkvbench.config import load_option
from rwkvbench.errors import ConfigError
from rwkvbench.results import ResultsWriter
from rwkvbench.train.data import Corpus
from rwkvbench.train.rows import finished_runs, training_table
from rwkvbench.train.trainer import RunSpec, train_run

COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
GRAPH_MODES = ("reduce-overhead", "max-autotune")  # the modes that replay CUDA graphs
RUN_OVERHEAD_S = 20.0  # model build, first compile, validation, export: a rough allowance per run


def recipe_for(cfg: DictConfig, family: str) -> DictConfig:
    """The composed family config when it is this family (command-line overrides apply), else its file."""
    return cfg.family if cfg.family.name == family else load_option("train/family", family)


def size_config(cfg: DictConfig, name: str) -> DictConfig:
    return cfg.size if cfg.size.name == name else load_option("train/size", name)


def scaled_lr(recipe, lr_at_width: float, width_of_lr: int, width: int) -> float:
    """The learning rate at `width` from one found at `width_of_lr` (lr ~ width^-exponent)."""
    return float(lr_at_width) * (width_of_lr / width) ** float(recipe.lr_width_exponent)


def check_compile_mode(cfg: DictConfig) -> None:
    if cfg.compile_mode not in COMPILE_MODES:
        raise ConfigError(f"compile_mode={cfg.compile_mode!r}: expected one of torch.compile's modes, "
                          f"{', '.join(str(m) for m in COMPILE_MODES)}")


def make_spec(cfg: DictConfig, recipe, size, lr: float, token_scale: float = 1.0) -> RunSpec:
    check_compile_mode(cfg)
    return RunSpec(
        family=recipe.name, size=size.name, n_layer=int(size.n_layer), n_embd=int(size.n_embd),
        tokens=int(size.tokens * token_scale), batch_size=int(size.batch_size), lr=float(lr),
        recipe=OmegaConf.to_container(recipe, resolve=True), context_len=int(cfg.context_len), seed=int(cfg.seed),
        micro_batch_size=cfg.micro_batch_size, precision=cfg.precision, compile=bool(cfg.compile),
        compile_mode=cfg.compile_mode, loss_chunk=int(cfg.loss_chunk), eval_points=int(cfg.eval.points),
        eval_first=float(cfg.eval.first),
        eval_tokens=cfg.eval.tokens, eval_batch_size=int(cfg.eval.batch_size),
        checkpoint_every_s=float(cfg.checkpoint.every_s), checkpoint_every_steps=int(cfg.checkpoint.every_steps),
        keep_checkpoint=bool(cfg.checkpoint.keep), export_weights=bool(cfg.export.weights),
        export_dtype=cfg.export.dtype, peak_tflops=float(cfg.peak_tflops), max_epochs=float(cfg.max_epochs))


def single_spec(cfg: DictConfig) -> RunSpec:
    lr = cfg.lr if cfg.lr is not None else scaled_lr(cfg.family, cfg.family.lr, cfg.family.lr_width, cfg.size.n_embd)
    return make_spec(cfg, cfg.family, cfg.size, lr)


# ---- time estimates ---------------------------------------------------------------------------------
def _cost(spec: RunSpec, vocab: int) -> float:
    """Matrix weights touched per token: a rough cost for scaling a measured speed to another size."""
    return vocab * spec.n_embd + 13 * spec.n_embd ** 2 * spec.n_layer


class Estimator:
    """Seconds a run will take: its measured tokens/s where this size ran before (these results), else the
    throughput benchmark's, else the nearest size measured in this process scaled by cost, else an
    assumed MFU."""

    def __init__(self, cfg: DictConfig, vocab: int):
        self.cfg, self.vocab = cfg, vocab
        self.csv = pd.read_csv(cfg.ladder.throughput_csv) if cfg.ladder.throughput_csv else None
        self.measured: dict[str, list[tuple[float, float]]] = {}  # family -> [(cost, tokens/s)]

    def record(self, spec: RunSpec, results: pd.DataFrame) -> None:
        speed = self._rows_speed(spec, results)
        if speed is not None:
            self.measured.setdefault(spec.family, []).append((_cost(spec, self.vocab), speed))

    @staticmethod
    def _rows_speed(spec: RunSpec, results: pd.DataFrame) -> float | None:
        table = training_table(results)
        if "tokens_per_s" not in table:
            return None
        speed = table[table.model == spec.name].tokens_per_s.dropna()
        return float(speed.median()) if len(speed) else None

    def tokens_per_s(self, spec: RunSpec, results: pd.DataFrame) -> float:
        speed = self._rows_speed(spec, results)
        if speed is not None:
            return speed
        if self.csv is not None:
            # benchmarks/train_throughput.py's names
            setting = ("graphs" if spec.compile_mode in GRAPH_MODES else "compiled") if spec.compile else "eager"
            rows = self.csv[(self.csv.family == spec.family) & (self.csv["size"] == spec.size)
                            & (self.csv.setting == setting)].dropna(subset=["tokens_per_s"])
            if len(rows):
                return float(rows.tokens_per_s.max())
        cost = _cost(spec, self.vocab)
        if self.measured.get(spec.family):
            near_cost, near_speed = min(self.measured[spec.family], key=lambda m: abs(m[0] - cost))
            return near_speed * near_cost / cost
        return float(self.cfg.ladder.assumed_mfu) * spec.peak_tflops * 1e12 / (6 * cost)

    def seconds(self, spec: RunSpec, results: pd.DataFrame) -> float:
        return spec.tokens / self.tokens_per_s(spec, results) * 1.1 + RUN_OVERHEAD_S


# ---- the ladder -------------------------------------------------------------------------------------
class Ladder:
    def __init__(self, cfg: DictConfig, corpus: Corpus, out_dir: Path, writer: ResultsWriter, device, deadline):
        self.cfg, self.corpus, self.out_dir, self.writer, self.device = cfg, corpus, out_dir, writer, device
        self.deadline = deadline
        self.trained = 0  # runs this process has trained (or resumed)
        from rwkvbench.train.families import padded_vocab

        self.estimator = Estimator(cfg, padded_vocab(corpus.tokenizer.vocab_size))

    def run(self, spec: RunSpec) -> bool:
        """True when the run is finished (now or before); False when the deadline stopped the ladder."""
        results = self.writer.read()
        if (spec.name, spec.tag) in finished_runs(results):
            print(f"[rwkvbench.train] {spec.name} {spec.tag}: finished before, skipped")
            return True
        if self.deadline is not None and not self.in_time([spec], f"{spec.name} {spec.tag}", results):
            return False
        finished = train_run(spec, self.corpus, self.out_dir, self.writer, self.device, self.deadline)
        self.trained += 1
        self.estimator.record(spec, self.writer.read())
        return finished

    def best_lr(self, spec_of, lrs) -> float:
        """The swept rate chosen from the final validation losses (choose_lr)."""
        table = training_table(self.writer.read())
        finals = {}
        for lr in lrs:
            spec = spec_of(lr)
            rows = table[(table.model == spec.name) & (table.tag == spec.tag) & (table.step == spec.steps)]
            finals[lr] = float(rows.val_loss.iloc[0])
        tolerance = float(self.cfg.ladder.get("sweep_tolerance", 0.0))
        best = choose_lr(finals, tolerance)
        edge = " (at the edge of the sweep: widen it)" if best in (min(lrs), max(lrs)) else ""
        print(f"[rwkvbench.train] {spec_of(best).family} sweep: " +
              ", ".join(f"lr={lr:g}: {v:.4f}" for lr, v in sorted(finals.items())) +
              f" -> lr={best:g} (the smallest within {tolerance:g} of the lowest){edge}")
        return best

    def sweep(self, recipe, size, lrs: list[float]) -> RunSpec | None:
        """The family's run at the first size: every rate in the sweep trained, then the run at choose_lr's
        pick (None if the deadline stopped it)."""
        def spec_at(lr):
            return make_spec(self.cfg, recipe, size, lr, float(self.cfg.ladder.token_scale))

        for lr in lrs:
            if not self.run(spec_at(lr)):
                return None
        return spec_at(self.best_lr(spec_at, lrs))

    def all(self) -> dict[str, list[RunSpec]] | None:
        """Every family's sweep at the first size, then each size in turn for every family, so that a
        size's runs train back to back, in one call when they fit its deadline together (`fits`): on one
        GPU in one process their in-run tokens/s compare. (Trained family after family, a pair's runs
        fell in different calls, and on an H200 the same step ran up to 11% apart between processes.)
        The specs per family (all finished), or None if the deadline stopped the ladder."""
        cfg, ladder = self.cfg, self.cfg.ladder
        sizes = [size_config(cfg, s) for s in ladder.sizes]
        first, scale = sizes[0], float(ladder.token_scale)
        recipes = {name: recipe_for(cfg, name) for name in ladder.families}
        chosen: dict[str, list[RunSpec]] = {}
        for name, recipe in recipes.items():
            sweep = [float(lr) for lr in ladder.sweep] or [scaled_lr(recipe, recipe.lr, recipe.lr_width, first.n_embd)]
            spec = self.sweep(recipe, first, sweep)
            if spec is None:
                return None
            chosen[name] = [spec]
        for size in sizes[1:]:
            pair = {name: make_spec(cfg, recipes[name], size,
                                    scaled_lr(recipes[name], specs[0].lr, first.n_embd, size.n_embd), scale)
                    for name, specs in chosen.items()}
            if not self.fits(list(pair.values())):
                return None
            for name, spec in pair.items():
                if not self.run(spec):
                    return None
                chosen[name].append(spec)
        return chosen

    def fits(self, pair: list[RunSpec]) -> bool:
        """Whether a size's runs, none of them finished yet, fit together before the deadline (else the
        ladder stops before the first of them, and the next call trains them both). Once one of them
        has finished, or when they do not fit even a call that has trained nothing yet, the runs go on
        one by one (`run` checks each)."""
        if self.deadline is None or self.trained == 0:
            return True
        results = self.writer.read()
        done = finished_runs(results)
        if any((spec.name, spec.tag) in done for spec in pair):
            return True
        return self.in_time(pair, f"{', '.join(spec.name for spec in pair)} together", results)

    def in_time(self, specs: list[RunSpec], label: str, results: pd.DataFrame) -> bool:
        """Whether the runs' estimated time fits what is left before the deadline; if not, says so."""
        need, left = sum(self.estimator.seconds(spec, results) for spec in specs), self.deadline - time.monotonic()
        if need > left:
            print(f"[rwkvbench.train] {label}: needs ~{need:.0f} s, {left:.0f} s left before the deadline; stopping "
                  f"here (run the same command again to continue)")
            return False
        return True


def choose_lr(finals: dict[float, float], tolerance: float) -> float:
    """The smallest rate whose final validation loss is within `tolerance` of the lowest. Near its
    optimum the loss is flat in the rate, so the argmin is a coin toss between neighbours, and the rate
    is carried to widths five times the sweep's, where the larger of two near-equal rates did worse:
    GPT-NeoX's s1 sweep gave 6.333 at 4e-3 and 6.328 at 8e-3 (an H200, 2026-11-24), and the ladder
    trained from 8e-3 reached 4.83 at s7 against 4.30 from 4e-3."""
    lowest = min(finals.values())
    return min(lr for lr, loss in finals.items() if loss <= lowest + tolerance)


def write_pair_configs(out_dir: Path, chosen: dict[str, list[RunSpec]]) -> list[Path]:
    """models/model/<family>_<size>.yaml for every size both families finished here, each naming the
    other as `matched` (an absolute path): `python -m rwkvbench -cd OUT/models model=rwkv4_s3` runs a
    suite on the trained pair."""
    if len(chosen) != 2:
        return []
    folder = out_dir / "models" / "model"
    (a, specs_a), (b, specs_b) = chosen.items()
    written = []
    for sa, sb in zip(specs_a, specs_b):
        runs = [out_dir / "runs" / s.run_dir_name / "model.yaml" for s in (sa, sb)]
        if not all(r.is_file() for r in runs):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        targets = [folder / f"{s.name}.yaml" for s in (sa, sb)]
        for run, target, partner in zip(runs, targets, reversed(targets)):
            cfg = OmegaConf.load(run)
            cfg.matched = str(partner.resolve())
            OmegaConf.save(cfg, target)
            written.append(target)
    return written


def check_ladder(cfg: DictConfig) -> None:
    """Bad names fail here, before any tokenizing or training."""
    from rwkvbench.train.families import get_family

    check_compile_mode(cfg)
    for name in cfg.ladder.families:
        get_family(name)
        recipe_for(cfg, name)
    if not cfg.ladder.sizes:
        raise ConfigError("ladder.sizes: empty; give at least one size (conf/train/size/*.yaml)")
    for s in cfg.ladder.sizes:
        try:
            size_config(cfg, s)
        except ValueError as e:
            raise ConfigError(f"ladder.sizes: {e}") from None
