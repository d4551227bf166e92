"""python -m rwkvbench task=lambada model=rwkv4_1b5  (Hydra; see conf/config.yaml)."""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rwkvbench.config import conf_dir


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> None:
    from rwkvbench.plots import save_plots
    from rwkvbench.run import run, summary

    writer = run(cfg, HydraConfig.get().runtime.output_dir)
    results = writer.read()
    print(summary(results))
    print(f"[rwkvbench] results: {writer.path} (and {writer.path.with_suffix('.csv').name})")
    for path in save_plots(results, writer.dir):
        print(f"[rwkvbench] plot: {path}")


if __name__ == "__main__":
    main()
