"""How the review page copes with a large run: build it for N comments and time it in Chromium.

    python benchmarks/review_page.py --from outputs/seed [--comments 100000] [--flagged-share 0.08]

Encoding 100,000 comments takes half an hour here, and the page only reads the run's files, so
this scales a finished run's files up instead: its comments are repeated under new ids, grouped
into duplicate groups of varied size, with the given share of groups flagged. It then builds
review/index.html with the project's report code and opens it in headless Chromium (Debian's
chromium + chromedriver). Prints one JSON line: comments, queued groups, file MB, build seconds,
load seconds (navigation to the first rendered queue entry), and seconds to filter by a category
and to search.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.report import page as report  # noqa: E402
from pipeline.stages import export  # noqa: E402


def scaled_run(src: Path, n: int, flagged_share: float, dest: Path) -> None:
    base = pl.read_parquet(src / "comments.parquet")
    rng = np.random.default_rng(0)
    reps = int(np.ceil(n / base.height))
    big = pl.concat([base.with_columns(pl.format("{}#{}", "comment_id", pl.lit(i)).alias("comment_id")) for i in range(reps)]).head(n)
    # Group sizes: most comments alone, a long tail of campaigns (Zipf-like).
    sizes = np.minimum(rng.zipf(2.0, n), 500)
    group = np.repeat(np.arange(n), sizes)[:n]
    flagged_groups = rng.random(n) < flagged_share
    flags = flagged_groups[group]
    big = big.with_columns(
        pl.Series("dup_group", [f"g{g:07d}" for g in group]),
        pl.Series("needs_review", flags),
        pl.Series("flag_abuse", flags & (rng.random(n) < 0.6)),
        pl.Series("flag_conspiracy", flags & (rng.random(n) < 0.4)),
    )
    big = big.with_columns(
        pl.len().over("dup_group").alias("dup_group_size"), pl.col("comment_id").first().over("dup_group").alias("dup_rep_id")
    )
    big = big.with_columns(pl.col("flag_abuse") | (pl.col("needs_review") & ~pl.col("flag_conspiracy") & ~pl.col("flag_hate")))
    big = big.with_columns(export.priority_expr().alias("review_priority"))
    (dest / "review").mkdir(parents=True, exist_ok=True)
    big.write_parquet(dest / "comments.parquet")
    pl.read_parquet(src / "topics.parquet").write_parquet(dest / "topics.parquet")
    export.review_queue(big).write_parquet(dest / "review" / "queue.parquet")
    if (src / "review" / "map.parquet").exists():
        shutil.copy(src / "review" / "map.parquet", dest / "review" / "map.parquet")
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["summary"].update(rows_in=n, kept=n, dup_groups=int(big["dup_group"].n_unique()))
    (dest / "manifest.json").write_text(json.dumps(manifest))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--from", dest="src", type=Path, required=True, help="a finished run's output directory")
    ap.add_argument("--comments", type=int, default=100_000)
    ap.add_argument("--flagged-share", type=float, default=0.08)
    args = ap.parse_args()
    dest = Path(tempfile.mkdtemp(prefix="page-"))
    scaled_run(args.src, args.comments, args.flagged_share, dest)
    t0 = time.perf_counter()
    page = report.build(dest)
    build_s = time.perf_counter() - t0
    queued = pl.read_parquet(dest / "review" / "queue.parquet").height

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        t0 = time.perf_counter()
        driver.get(page.as_uri())
        driver.find_element(By.CSS_SELECTOR, ".entry")
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        Select(driver.find_element(By.ID, "f-cat")).select_by_value("conspiracy")
        driver.find_element(By.CSS_SELECTOR, ".entry")
        filter_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        box = driver.find_element(By.ID, "f-search")
        box.send_keys("阿里")
        driver.find_element(By.ID, "shown")
        search_s = time.perf_counter() - t0
        shown = driver.find_element(By.ID, "shown").text
    finally:
        driver.quit()
    print(
        json.dumps(
            {
                "comments": args.comments,
                "queued_groups": queued,
                "file_mb": round(page.stat().st_size / 2**20, 1),
                "build_s": round(build_s, 1),
                "load_s": round(load_s, 2),
                "filter_s": round(filter_s, 2),
                "search_s": round(search_s, 2),
                "after_search": shown,
            },
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
