"""The hand-labelled real-comment set: ids and labels only, every thread in one split, and the
labels join to their text in ../shared at run time."""

from pathlib import Path

import polars as pl
import pytest

from conftest import SHARED, needs_shared

LABELS = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "weibo_ced_labels.csv"
CORPUS = SHARED / "bench" / "weibo_ced_comments.parquet"


def labels() -> pl.DataFrame:
    return pl.read_csv(LABELS, schema_overrides={"comment_id": pl.String})


def test_the_repository_keeps_ids_and_labels_only():
    df = labels()
    assert "text" not in df.columns  # the corpus has no licence: its text stays in ../shared
    assert set(df.columns) == {"comment_id", "thread_id", "split", "stratum", "conspiracy", "abusive", "hate", "unsure"}
    assert df.height >= 2000 and df["comment_id"].n_unique() == df.height
    for c in ("conspiracy", "abusive", "hate", "unsure"):
        assert set(df[c].unique().to_list()) <= {0, 1}


def test_threads_never_straddle_dev_and_test():
    df = labels()
    per_thread = df.group_by("thread_id").agg(pl.col("split").n_unique().alias("splits"))
    assert per_thread["splits"].max() == 1
    assert set(df["split"].unique().to_list()) == {"dev", "test"}
    assert set(df["stratum"].unique().to_list()) == {"random", "vocab", "flagged", "vocab_conspiracy"}


@needs_shared(CORPUS)
def test_every_label_joins_its_text_and_the_split_rule():
    import sys

    sys.path.insert(0, str(LABELS.parents[1]))
    from real_sample import split_of

    df = labels()
    text = pl.read_parquet(CORPUS, columns=["comment_id", "thread_id"]).unique("comment_id", keep="first")
    joined = df.join(text, on="comment_id", how="left", suffix="_corpus")
    assert joined["thread_id_corpus"].null_count() == 0
    assert (joined["thread_id"] == joined["thread_id_corpus"]).all()
    assert [split_of(t) for t in df["thread_id"].to_list()] == df["split"].to_list()


@pytest.mark.slow
@needs_shared(CORPUS)
def test_the_real_benchmark_reports_per_stratum(tmp_path):
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, str(LABELS.parents[1] / "real_flags.py"), "--split", "dev"], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"all", "random", "vocab", "flagged", "vocab_conspiracy"} <= set(result)
    assert 0 <= result["random_stream_queue_share"] <= 1
    assert result["all"]["conspiracy"]["positives"] >= 20
