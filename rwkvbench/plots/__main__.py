"""python -m rwkvbench.plots RESULTS... --out DIR: every applicable figure of the merged results as PNG
(RESULTS as for python -m rwkvbench.report: run folders, multirun folders, .parquet or .csv files)."""

from __future__ import annotations

import argparse
import sys

from rwkvbench.errors import UserError


def main(argv=None) -> int:
    from rwkvbench.plots import save_plots
    from rwkvbench.report import collect, merge

    ap = argparse.ArgumentParser(prog="python -m rwkvbench.plots", description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--out", required=True, help="folder for the PNG files")
    args = ap.parse_args(argv)
    try:
        df, _ = merge(collect(args.results))
        paths = save_plots(df, args.out)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(f"[rwkvbench] plot: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
