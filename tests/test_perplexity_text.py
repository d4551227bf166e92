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
