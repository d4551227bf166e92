"""benchmarks/publish_results.sh: its steps are checked before anything runs, and a step that needs
another's output says which."""

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "publish_results.sh"


def run(*args, env=None):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env=env)


def test_an_unknown_step_is_refused_before_any_step_runs():
    out = run("report", "nope")
    assert out.returncode == 2
    assert "unknown step 'nope'" in out.stderr and "ladder trained" in out.stderr
    assert "[publish]" not in out.stdout  # the valid step before it did not run either


def test_trained_needs_the_ladders_models(tmp_path):
    import os

    out = run("trained", env={**os.environ, "RWKVBENCH_SCRATCH": str(tmp_path)})
    assert out.returncode == 1
    assert f"no trained pair in {tmp_path}/ladder/models yet (run the ladder step)" in out.stderr
