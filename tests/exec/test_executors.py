"""The executors: the Ray Data executor gives the local executor's tables; batch functions map
any split of the rows to the same result."""

from __future__ import annotations

import polars as pl
import pytest

from conftest import PROJECT, SAMPLE, run_pipeline
from pipeline.config import load_config
from pipeline.exec.executor import LocalExecutor
from pipeline.stages import dedup, ingest

OUTPUTS = ("comments.parquet", "topics.parquet", "review/queue.parquet")


def run(out, *overrides: str) -> dict:
    return run_pipeline([SAMPLE], out, *overrides)


def test_batch_size_does_not_change_results():
    """Stage work split into batches of 1, 3 or all rows gives the same rows in the same order."""
    texts = pl.DataFrame({"text": ["加 V 信 看 看", "傻逼吧你", "同上", "今天天气不错，出去走走", "一步一个脚印"] * 3})
    whole = LocalExecutor(progress=False).map_batches(ingest.Normalizer, texts, batch_size=100, desc="", max_chars=2000)
    for size in (1, 3):
        assert LocalExecutor(progress=False).map_batches(ingest.Normalizer, texts, batch_size=size, desc="", max_chars=2000).equals(whole)
    cfg = load_config(None, []).dedup
    sounds = pl.DataFrame({"sound": ["一步一个脚印踏实做事", "一比一个脚印踏实做事", "今天天气不错出去走走"] * 2})
    signed = [
        LocalExecutor(progress=False).map_batches(dedup.Signer, sounds, batch_size=size, desc="", cfg=cfg, seed=0, bands=25)
        for size in (1, 4, 100)
    ]
    assert signed[0].equals(signed[1]) and signed[0].equals(signed[2])


@pytest.mark.slow
def test_ray_executor_gives_the_local_table(tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    local = run(tmp_path / "local")
    ray_run = run(tmp_path / "ray", "run.executor=ray", "run.ray_actors=2")
    for name in OUTPUTS:
        a, b = pl.read_parquet(tmp_path / "local" / name), pl.read_parquet(tmp_path / "ray" / name)
        assert a.equals(b), f"{name} differs between the local and the ray executor"
    assert [s["name"] for s in ray_run["stages"]] == [s["name"] for s in local["stages"]]
    assert ray_run["config"]["run"]["executor"] == "ray"


@pytest.mark.slow
def test_ray_on_a_two_node_cluster_gives_the_local_tables(tmp_path):
    """benchmarks/executors.py --cluster 2: `ray start --head` plus a second node joining it, the
    pipeline joining that cluster through run.ray_address, the same tables as the local executor."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    import json
    import subprocess
    import sys

    sample = tmp_path / "sample.parquet"
    pl.read_ndjson(SAMPLE).select("comment_id", "text").write_parquet(sample)
    res = subprocess.run(
        [sys.executable, "benchmarks/executors.py", "--input", str(sample), "--rows", "1000", "--cluster", "2"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["nodes"] == 2
    assert result["ray"]["executor"]["nodes"] == 2 and result["ray"]["executor"]["address"] == result["cluster"]
    assert result["local"]["executor"] == {"name": "local"}
    assert all(result["identical"].values()), result["identical"]
