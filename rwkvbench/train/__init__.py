"""Training both families from scratch on the same tokens: `python -m rwkvbench.train` (conf/train/).

RWKV-4 through our own modules and CUDA WKV kernel, GPT-NeoX through transformers in Pythia's
architecture; a matched ladder of sizes, loss versus compute with power-law fits, and weights the
harness loads with `load_model(..., path=)`."""
