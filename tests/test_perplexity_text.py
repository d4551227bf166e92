"""The perplexity task's built-in text (the package's README and module docstrings) is read from the
source: no module is imported, so a module that needs a GPU-only package (Triton) does not break it."""

import sys

from rwkvbench.evals.perplexity import package_docs


def test_package_docs_read_without_importing_gpu_modules(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` raises ImportError
    monkeypatch.delitem(sys.modules, "rwkvbench.kernels.cross_entropy_triton", raising=False)
    text = package_docs()
    assert "overwriting the logits (Triton)" in text  # that module's docstring, read from its source
    assert "rwkvbench.kernels.cross_entropy_triton" not in sys.modules


def test_validation_reads_a_pile_file_as_the_run_does_and_once(tmp_path):
    """A `.jsonl.xz` split is text the run scores (its documents); validation read its bytes as UTF-8 and
    refused it. Now both read it through load_text, the second time from its cache."""
    import json
    import lzma

    from omegaconf import OmegaConf

    from rwkvbench.evals import perplexity
    from rwkvbench.validate import check_perplexity_part

    path = tmp_path / "valid.jsonl.xz"
    with lzma.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "hello world"}) + "\n")
    perplexity._file_text.cache_clear()
    check_perplexity_part(OmegaConf.create({"text": str(path), "context_len": 8, "max_tokens": 64,
                                            "batch_size": 2}), "task.parts.0")
    assert perplexity.load_text(str(path)) == "hello world"
    assert perplexity._file_text.cache_info().hits == 1
