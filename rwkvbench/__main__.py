"""python -m rwkvbench task=lambada model=rwkv4_1b5  (Hydra; see conf/config.yaml)."""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rwkvbench.config import conf_dir


def report(out_dir) -> None:
    """The summary table and plots of everything in the run folder."""
    from rwkvbench.plots import save_plots
    from rwkvbench.results import PARQUET, read_results
    from rwkvbench.run import summary

    results = read_results(out_dir)
    print(summary(results))
    print(f"[rwkvbench] results: {out_dir}/{PARQUET} (and results.csv, runs.jsonl)")
    for path in save_plots(results, out_dir):
        print(f"[rwkvbench] plot: {path}")


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> None:
    from rwkvbench.run import run

    out_dir = HydraConfig.get().runtime.output_dir
    try:
        run(cfg, out_dir)
    except KeyboardInterrupt:  # what finished is on disk: show it, then stop
        print("\n[rwkvbench] interrupted: results of the finished units follow", file=sys.stderr)
        report(out_dir)
        sys.exit(130)
    report(out_dir)


if __name__ == "__main__":
    main()
