"""The int8 ONNX e5 (the default runtime) must embed like torch fp32 e5, and a text's vector must not
depend on what it is encoded with.

Real build from the rebuilt e5 model in the user cache (about a minute the first time), real
ONNX Runtime; the speed is measured in benchmarks/encode_speed.py, never here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.models import e5_model, e5_onnx, embedder

REAL_LIKE = [
    "这个视频太搞笑了，哈哈哈哈",
    "垃圾产品，千万别买！客服态度也很差",
    "回复@小王:你说的不对，病毒是从实验室泄漏的吧？",
    "主播加油！！！",
    "转发微博",
    "好",
    "這部電影真的很好看，推薦給大家",
    "笑死我了😂😂👍 太有才了",
    "How much protein should a woman eat per day?",
    "背后肯定有资本在操控，大家别被带节奏了。" * 6,  # long: close to the 256-token limit
]


@pytest.fixture(scope="module")
def configs():
    return load_config(None, []).embed, load_config(None, ["embed.runtime=torch"]).embed


@pytest.fixture(scope="module")
def models(configs):
    onnx_cfg, torch_cfg = configs
    cache = e5_model.default_cache_dir()
    return embedder.load_model(onnx_cfg, cache), embedder.load_model(torch_cfg, cache)


def test_default_runtime_is_the_int8_onnx_model(configs) -> None:
    onnx_cfg, torch_cfg = configs
    assert onnx_cfg.runtime == "onnx-int8"
    # Vectors of the two runtimes differ, so they must never share cache entries; the space is the
    # same, so models trained on e5 vectors (the conspiracy head) still accept them.
    assert embedder.cache_id(onnx_cfg) != embedder.cache_id(torch_cfg)
    assert embedder.model_id(onnx_cfg) == embedder.model_id(torch_cfg)


def test_vectors_agree_with_torch_fp32(models, configs) -> None:
    onnx_model, torch_model = models
    onnx_cfg, torch_cfg = configs
    ours = embedder.encode(onnx_model, REAL_LIKE, onnx_cfg)
    reference = embedder.encode(torch_model, REAL_LIKE, torch_cfg)
    assert ours.shape == reference.shape == (len(REAL_LIKE), embedder.DIM) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosine = (ours * reference).sum(axis=1)
    assert cosine.min() >= 0.99, cosine
    # Not the same numbers: int8 weights really are what runs.
    assert cosine.max() < 0.99999


def test_a_vector_is_a_function_of_its_text(models, configs) -> None:
    # Activations are quantised with one scale per call: batched, a text's vector would follow its
    # batch mates and so the embedding cache's history.
    onnx_model, _ = models
    cfg = configs[0]
    together = embedder.encode(onnx_model, REAL_LIKE, cfg)
    alone = np.stack([embedder.encode(onnx_model, [t], cfg)[0] for t in REAL_LIKE])
    assert np.array_equal(together, alone)
    assert np.array_equal(embedder.encode(onnx_model, REAL_LIKE[::-1], cfg)[::-1], together)
    one_thread = embedder.load_model(cfg.model_copy(update={"threads": 1}), e5_model.default_cache_dir())
    assert np.array_equal(embedder.encode(one_thread, REAL_LIKE, cfg), together)


def test_nothing_to_encode(models, configs) -> None:
    assert embedder.encode(models[0], [], configs[0]).shape == (0, embedder.DIM)


def test_token_states_feed_the_offence_layer(models, configs) -> None:
    onnx_model, torch_model = models
    from pipeline.config import PROJECT_ROOT
    from pipeline.stages.embed import load_offence_encoder

    offence = load_offence_encoder(PROJECT_ROOT / "models", e5_model.default_cache_dir())
    texts = ["你就是个废物，滚", "今天天气真好，出去走走", "这种人渣就该被骂"]
    vectors, logits = embedder.encode_with_offence(onnx_model, offence, texts, configs[0])
    ref_vectors, ref_logits = embedder.encode_with_offence(torch_model, offence, texts, configs[1])
    assert np.array_equal(vectors, embedder.encode(onnx_model, texts, configs[0]))
    assert logits.shape == (3,) and np.all(np.abs(logits - ref_logits) < 0.5), (logits, ref_logits)
    assert np.array_equal(np.sign(logits), np.sign(ref_logits))


def test_an_incomplete_build_is_not_trusted(tmp_path: Path) -> None:
    # A copied model folder without its marker, or with a truncated model file, is never loaded.
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    built = e5_onnx.ensure_model(e5_model.default_cache_dir(), progress=False)
    (cache / "models" / e5_model.model_dir().name).symlink_to(e5_model.model_dir())
    target = e5_onnx.model_dir(cache)
    shutil.copytree(built, target)
    assert e5_onnx.is_complete(target)
    with open(target / e5_onnx.MODEL_FILE, "r+b") as f:
        f.truncate(1000)
    assert not e5_onnx.is_complete(target)
    marker = json.loads((built / e5_onnx.MARKER).read_text())
    assert marker["runtime_id"] == e5_onnx.RUNTIME_ID and marker["e5_model_id"] == e5_model.MODEL_ID


def test_threads_come_from_the_config_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what a Ray actor with one CPU gets
    assert e5_onnx.resolve_threads(0) == 1
    assert e5_onnx.resolve_threads(3) == 3  # embed.threads wins
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert e5_onnx.resolve_threads(0) == len(os.sched_getaffinity(0))
