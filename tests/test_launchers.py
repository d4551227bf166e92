"""Sweeps across GPUs and machines through Hydra's launchers: hydra/launcher=local_gpus (joblib, jobs side
by side) writes every job's rows; hydra/launcher=slurm composes into submitit's SLURM launcher."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rwkvbench.config import conf_dir
from rwkvbench.results import read_results

ROOT = Path(__file__).resolve().parents[1]


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.partition == "gpu"
    assert any("NCCL_NVLS_ENABLE=0" in line for line in launcher.setup)


@pytest.mark.slow
def test_a_multirun_through_the_joblib_launcher_writes_every_jobs_rows(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "rwkvbench", "-m", "hydra/launcher=local_gpus",
                          "model=rwkv4_tiny,neox_tiny", "compare=false", "task=copy", "device=cpu",
                          "task.parts.0.context_lens=[64]", "task.parts.0.n_items=2", "task.parts.0.kinds=[random]",
                          f"hydra.sweep.dir={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in out.stdout + out.stderr  # the jobs ran through the joblib launcher
    for job, model in (("0-copy-rwkv4_tiny", "rwkv4_tiny"), ("1-copy-neox_tiny", "neox_tiny")):
        df = read_results(tmp_path / job)
        assert set(df.model) == {model} and df.value.notna().all()
        assert {"exact_match", "answer_logprob"} <= set(df.metric)
    assert set(read_results(tmp_path).model) == {"rwkv4_tiny", "neox_tiny"}
