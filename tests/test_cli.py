"""The CLI: the offline default run produces results; overrides and errors behave."""

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from rwkvbench.config import conf_dir
from rwkvbench.results import read_results
from rwkvbench.run import run


def test_default_run_via_compose(tmp_path):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["device=cpu"])
    run(cfg, tmp_path)
    df = read_results(tmp_path)
    assert set(df.model) == {"rwkv4_tiny", "neox_tiny"}
    assert {"bits_per_byte", "prefill_ms", "decode_ms_per_token", "state_bytes"} <= set(df.metric)
    assert df.value.notna().all()
    # RWKV's state does not grow with context; the KV cache does.
    state = df[df.metric == "state_bytes"].pivot_table(index="context_len", columns="model", values="value")
    assert state["rwkv4_tiny"].nunique() == 1 and state["neox_tiny"].is_monotonic_increasing


def test_rerun_into_same_folder_skips_finished_units(tmp_path):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["device=cpu", "task=latency", "compare=false",
                                                       "task.parts.0.context_lens=[16]"])
    run(cfg, tmp_path)
    first = read_results(tmp_path)
    run(cfg, tmp_path)
    again = read_results(tmp_path)
    assert first.run_id.unique().tolist() == again.run_id.unique().tolist()  # nothing re-measured


@pytest.mark.slow
def test_cli_subprocess_from_another_directory(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "rwkvbench", "task=latency", "task.parts.0.context_lens=[16,32]", "device=cpu",
         f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "results:" in out.stdout
    assert len(read_results(tmp_path / "run")) > 0
    assert (tmp_path / "run" / "efficiency.png").stat().st_size > 10_000 and "plot:" in out.stdout


def test_cli_unknown_model_names_the_valid_ones(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rwkvbench", "model=rwkv9"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0
    assert "rwkv9" in out.stderr and "rwkv4_1b5" in out.stderr


def test_wkv_kernel_key_sets_the_path_and_rejects_bad_values(tmp_path, monkeypatch):
    from rwkvbench.kernels.dispatch import KERNEL_ENV

    monkeypatch.setenv(KERNEL_ENV, "auto")
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["device=cpu", "task=latency", "compare=false",
                                                       "task.parts.0.context_lens=[8]", "wkv_kernel=reference"])
        bad = compose(config_name="config", overrides=["wkv_kernel=fast"])
    run(cfg, tmp_path)
    import os

    assert os.environ[KERNEL_ENV] == "reference"
    with pytest.raises(ValueError, match="wkv_kernel='fast': expected auto, cuda, reference"):
        run(bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # found before anything was written


@pytest.mark.slow
def test_multirun_writes_one_results_file_per_job_and_one_combined_table(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "rwkvbench", "-m", "model=rwkv4_tiny,neox_tiny", "compare=false", "task=latency",
         "task.parts.0.context_lens=[8,16]", "device=cpu", f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    files = sorted((tmp_path / "sweep").glob("*/results.parquet"))
    assert [read_results(f).model.unique().tolist() for f in files] == [["rwkv4_tiny"], ["neox_tiny"]]
    # the sweep callback: one table over both jobs (both models as columns), plots in the sweep folder
    combined = out.stdout.split("[rwkvbench] sweep:")[1]
    header = next(line for line in combined.splitlines() if line.startswith("model"))
    assert "neox_tiny" in header and "rwkv4_tiny" in header
    assert "prefill_ms" in combined and "state_bytes" in combined
    assert (tmp_path / "sweep" / "efficiency.png").stat().st_size > 10_000
