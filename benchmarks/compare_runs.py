"""Are two runs' outputs the same? One JSON line: `identical`, and per table the columns that differ.

    python benchmarks/compare_runs.py OUT_A OUT_B

Compares every column of comments.parquet, topics.parquet, review/queue.parquet and
review/map.parquet (the contract's tables; manifest.json holds times and paths, so it is left out).
Used to show that a refactor changed no output: run the same input before and after, compare.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

TABLES = ("comments.parquet", "topics.parquet", "review/queue.parquet", "review/map.parquet")


def compare(a: Path, b: Path) -> dict:
    tables = {}
    for name in TABLES:
        ta, tb = pl.read_parquet(a / name), pl.read_parquet(b / name)
        columns = sorted(set(ta.columns) | set(tb.columns))
        differing = [
            c
            for c in columns
            if c not in ta.columns
            or c not in tb.columns
            or ta.height != tb.height
            or not ta[c].equals(tb[c], check_names=True, check_dtypes=True)
        ]
        tables[name] = {"rows": [ta.height, tb.height], "columns": len(columns), "differing": differing}
    return {"identical": all(not t["differing"] for t in tables.values()), "tables": tables}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    result = compare(args.a, args.b)
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
