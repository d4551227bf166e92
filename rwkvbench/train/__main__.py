"""python -m rwkvbench.train [mode=run|ladder|fit] [family=...] [size=...]  (Hydra; conf/train/config.yaml)."""

import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rwkvbench import distributed
from rwkvbench.config import conf_dir
from rwkvbench.errors import UserError


def _deadline(cfg):
    return None if cfg.deadline_s is None else time.monotonic() + float(cfg.deadline_s)


def run_one(cfg: DictConfig, out_dir: Path, writer) -> None:
    from rwkvbench.models.registry import resolve_device
    from rwkvbench.train.data import load_corpus
    from rwkvbench.train.ladder import single_spec
    from rwkvbench.train.rows import finished_runs
    from rwkvbench.train.trainer import train_run

    place = distributed.init()  # torchrun: data parallel, one GPU per rank (the trainer's docstring)
    spec = single_spec(cfg)
    if (spec.name, spec.tag) in finished_runs(writer.read()):  # before the corpus: tokenizing takes minutes
        print(f"[rwkvbench.train] {spec.name} {spec.tag}: finished before in {out_dir}, kept (another out_dir= or "
              f"changed settings train it again)")
        return
    if not place.is_main:
        distributed.barrier()  # rank 0 tokenizes into the cache first; the others then read it
    corpus = load_corpus(cfg.data, spec.context_len, spec.seed)
    if place.is_main:
        distributed.barrier()
    train_run(spec, corpus, out_dir, writer, resolve_device(distributed.rank_device(cfg.device, place)),
              _deadline(cfg))


def _build_extension_beside(device, families):
    """On CUDA, build (or load) the CUDA extension in a thread while the corpus is tokenized."""
    import threading

    from rwkvbench.train.families import get_family

    if device.type != "cuda" or not any(get_family(f).cuda_extension for f in families):
        return None
    from rwkvbench.kernels.cuda_build import load_extension

    def build():
        t0 = time.monotonic()
        ok = load_extension() is not None
        print(f"[rwkvbench.train] CUDA extension {'ready' if ok else 'UNAVAILABLE'} ({time.monotonic() - t0:.0f} s)")

    thread = threading.Thread(target=build, daemon=True)
    thread.start()
    return thread


def run_ladder(cfg: DictConfig, out_dir: Path, writer) -> None:
    from rwkvbench.models.registry import resolve_device
    from rwkvbench.train.data import load_corpus
    from rwkvbench.train.ladder import Ladder, check_ladder, size_config, write_pair_configs
    from rwkvbench.train.rows import finished_runs

    if distributed.env().world_size > 1:
        raise UserError("mode=ladder under torchrun: the ladder trains one run at a time on one GPU; use mode=run "
                        "for a data-parallel run, or a Hydra launcher to spread runs over GPUs")
    check_ladder(cfg)
    deadline = _deadline(cfg)
    device = resolve_device(cfg.device)
    done = {model for model, _ in finished_runs(writer.read())}
    pending = [f for f in cfg.ladder.families
               if not all(f"{f}_{size_config(cfg, s).name}" in done for s in cfg.ladder.sizes)]
    build = _build_extension_beside(device, pending)
    t0 = time.monotonic()
    corpus = load_corpus(cfg.data, int(cfg.context_len), int(cfg.seed))
    print(f"[rwkvbench.train] corpus: {corpus.windows.tokens_per_epoch:,} training tokens in "
          f"{len(corpus.windows.streams)} files, {len(corpus.valid):,} validation tokens ({time.monotonic() - t0:.0f} s)")
    if build is not None:
        build.join()
    ladder = Ladder(cfg, corpus, out_dir, writer, device, deadline)
    for path in write_pair_configs(out_dir, ladder.all() or {}):
        print(f"[rwkvbench.train] model config: {path}")
    run_fit(cfg, out_dir, writer)


def run_fit(cfg: DictConfig, out_dir: Path, writer) -> None:
    from rwkvbench.train.report import plot_scaling, write_tables
    from rwkvbench.train.rows import merge_into, training_table
    from rwkvbench.train.scaling import scaling_fits, scaling_rows

    for source in cfg.fit.inputs:
        if not Path(source).exists():
            raise UserError(f"fit.inputs: {source}: no such results folder or file")
    table = training_table(merge_into(writer, cfg.fit.inputs) if cfg.fit.inputs else writer.read())
    fits = scaling_fits(table, cfg.fit)
    for rows, common in scaling_rows(fits, table):
        writer.append(rows, **common)
    for (family, compute), got in fits.items():
        f = got["fit"]
        print(f"[rwkvbench.train] {family} ({compute} compute): L = {f['a']:.4g} C^-{f['b']:.4f} "
              f"[{f['b_ci_low']:.4f}, {f['b_ci_high']:.4f}], r2 = {f['r2']:.4f} over {f['n_points']} frontier points")
    print(f"[rwkvbench.train] tables: {write_tables(table, fits, out_dir / 'ladder.md')}")
    if fits:
        print(f"[rwkvbench.train] figure: {plot_scaling(table, fits, out_dir / 'scaling.png', float(cfg.fit.min_fraction))}")


MODES = {"run": run_one, "ladder": run_ladder, "fit": run_fit}


@hydra.main(version_base="1.3", config_path=str(conf_dir() / "train"), config_name="config")
def main(cfg: DictConfig) -> None:
    from rwkvbench.results import ResultsWriter

    try:
        if cfg.mode not in MODES:
            raise UserError(f"mode={cfg.mode!r}: expected one of {', '.join(MODES)}")
        out_dir = Path(cfg.out_dir)
        writer = ResultsWriter(out_dir)
        MODES[cfg.mode](cfg, out_dir, writer)
        print(f"[rwkvbench.train] results: {writer.path} (and {writer.path.with_suffix('.csv').name})")
    except UserError as e:
        print(f"rwkvbench.train: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
