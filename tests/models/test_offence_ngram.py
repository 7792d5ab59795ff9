"""The offence model: the shipped one scores plain cases sensibly, and a model trained by our code
scores the same after save and load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.config import OWN_LABELLED_SETS
from pipeline.models.offence_ngram import OffenceModel
from pipeline.text.normalize import normalize_text
from pipeline.training.offence_data import own_rows
from pipeline.training.offence_ngram import _drop_seen, fit_sklearn, save_model, train

PROJECT = Path(__file__).resolve().parents[2]
SHIPPED = PROJECT / "models" / "offence"
SHARED = Path(__file__).resolve().parents[3] / "shared"
COLD = SHARED / "datasets" / "cold"
SWSR = SHARED / "datasets" / "swsr"

INSULTS = ["你就是个傻逼，脑子有病吧", "黑鬼都滚出中国", "河南人都是骗子，素质太低"]
NEUTRAL = ["这款手机的芯片性能提升了百分之二十，续航也更长了", "量子计算机的研究需要长期投入", "今天天气不错，我们去公园散步吧"]


def needs_cold():
    if not (COLD / "train.csv").exists():
        pytest.skip("needs ../shared/datasets/cold")


@pytest.fixture(scope="module")
def shipped() -> OffenceModel:
    return OffenceModel.load(SHIPPED)


def test_shipped_model_files():
    meta = json.loads((SHIPPED / "model.json").read_text(encoding="utf-8"))
    assert meta["format_version"] == 1
    assert meta["input"].endswith("normalize_text")
    assert not list(SHIPPED.glob("*.pkl")) and not list(SHIPPED.glob("*.joblib"))
    assert pq.read_metadata(SHIPPED / "vocab.parquet").num_rows == meta["features"]["n_features"]
    assert sum(f.stat().st_size for f in SHIPPED.iterdir()) < 15_000_000
    assert "Apache-2.0" in (SHIPPED / "README.md").read_text(encoding="utf-8")


def test_shipped_model_scores_clear_cases(shipped):
    insults = shipped.predict_proba([normalize_text(t) for t in INSULTS])
    neutral = shipped.predict_proba([normalize_text(t) for t in NEUTRAL])
    assert insults.min() > neutral.max()
    assert (insults >= shipped.threshold).all() and (neutral < shipped.threshold).all()
    assert 0.0 < shipped.threshold < 1.0
    assert isinstance(shipped.version, str) and len(shipped.version) == 12


def test_scores_are_probabilities(shipped):
    texts = [normalize_text(t) for t in INSULTS + NEUTRAL] + ["", "a", "哈" * 2000]
    p = shipped.predict_proba(texts)
    assert p.shape == (len(texts),) and np.isfinite(p).all()
    assert ((p >= 0.0) & (p <= 1.0)).all()
    assert shipped.predict_proba([]).shape == (0,)


def test_top_terms_come_from_the_text(shipped):
    for raw in INSULTS + ["ＳＢ，你算什么东西"]:
        text = normalize_text(raw)
        terms = shipped.top_terms(text, k=4)
        assert 0 < len(terms) <= 4
        assert all(term in text.lower() and w > 0 for term, w in terms)
        assert [w for _, w in terms] == sorted((w for _, w in terms), reverse=True)
    assert any("傻" in term for term, _ in shipped.top_terms(normalize_text(INSULTS[0]), k=3))
    assert shipped.top_terms("", k=3) == []


def test_shipped_model_matches_its_dev_metrics(shipped):
    # The files on disk must be the model that metrics.json describes.
    needs_cold()
    metrics = json.loads((SHIPPED / "metrics.json").read_text(encoding="utf-8"))
    train_texts = [normalize_text(t) for t in pl.read_csv(COLD / "train.csv")["TEXT"].to_list()]
    dev = pl.read_csv(COLD / "dev.csv")
    # Dev without near-copies of train rows, by the dedup matching key, as training chose on it.
    x, y, _ = _drop_seen([normalize_text(t) for t in dev["TEXT"]], dev["label"].to_numpy(), train_texts)
    pred = shipped.predict_proba(x) >= shipped.threshold
    assert len(x) == metrics["dev_rows"]
    assert abs(float((pred == y).mean()) - metrics["dev_accuracy"]) < 1e-3


def _subsample(src: Path, dst: Path, n: int, seed: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    pl.read_csv(src).sample(n, seed=seed).write_csv(dst)


def test_train_small_and_round_trip(tmp_path):
    needs_cold()
    # Real COLD rows, fewer of them, so the whole grid runs in seconds.
    _subsample(COLD / "train.csv", tmp_path / "cold" / "train.csv", 2000, seed=1)
    _subsample(COLD / "dev.csv", tmp_path / "cold" / "dev.csv", 600, seed=2)
    swsr = None
    if (SWSR / "SexComment.csv").exists():
        _subsample(SWSR / "SexComment.csv", tmp_path / "swsr" / "SexComment.csv", 500, seed=3)
        swsr = tmp_path / "swsr"
    out = tmp_path / "model"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")

    own = next(p for p in OWN_LABELLED_SETS if p.name == "abuse_dev.csv")
    metrics = train(tmp_path / "cold", swsr, out, seed=0, own_sets=[own], own_repeat=2)

    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert not (out / "stale.txt").exists(), "out_dir must be replaced, not merged into"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp dirs left behind"
    assert 0.6 < metrics["dev_macro_f1"] <= 1.0 and 0.0 < metrics["threshold"] < 1.0
    assert metrics["roundtrip_max_abs_diff"] <= 1e-6
    assert set(metrics["variants"]) == ({"cold+own", "cold+own+swsr"} if swsr else {"cold+own"})
    # Only the own set's "train" rows train (its held-out half never does), repeated as asked.
    own_train = own_rows([own], "train")
    assert 0 < metrics["train_rows"]["own"] <= len(own_train) < len(own_rows([own], "heldout")) + len(own_train)
    assert metrics["train_rows"]["own_repeat"] == 2

    model = OffenceModel.load(out)
    assert len(model.terms) == metrics["n_features"]
    assert model.threshold == metrics["threshold"]

    # Refitting with the saved vocabulary and the chosen parameters must give back the saved model:
    # training is deterministic, and loading loses nothing.
    cold = pl.read_csv(tmp_path / "cold" / "train.csv")
    texts, labels = [normalize_text(t) for t in cold["TEXT"]], cold["label"].to_numpy()
    dev_texts = [normalize_text(t) for t in pl.read_csv(tmp_path / "cold" / "dev.csv")["TEXT"]]
    dev_texts, _, _ = _drop_seen(dev_texts, np.zeros(len(dev_texts)), texts)
    own_x, own_y, _ = _drop_seen([t for t, _ in own_train], np.array([y for _, y in own_train]), dev_texts)
    texts, labels = texts + own_x * 2, np.concatenate([labels, own_y, own_y])
    if metrics["used_swsr"]:
        sw = pl.read_csv(swsr / "SexComment.csv")
        texts += [normalize_text(t) for t in sw["comment_text"]]
        labels = np.concatenate([labels, sw["label"].to_numpy()])
    params = metrics["params"]
    vec, clf = fit_sklearn(texts, labels, tuple(params["ngram_range"]), params["min_df"], params["C"], seed=0, vocabulary=model.terms)
    dev = [normalize_text(t) for t in pl.read_csv(tmp_path / "cold" / "dev.csv")["TEXT"]]
    np.testing.assert_allclose(model.predict_proba(dev), clf.predict_proba(vec.transform(dev))[:, 1], rtol=0, atol=1e-6)


def test_save_load_equals_sklearn(tmp_path):
    needs_cold()
    df = pl.read_csv(COLD / "train.csv").sample(2000, seed=4)
    texts = [normalize_text(t) for t in df["TEXT"]]
    # Mixed-case Latin text exercises lower-casing on both sides.
    texts[:3] = ["SB 你好", "Sb, 真是 NB", "nb 的 sB"]
    labels = df["label"].to_numpy()
    vec, clf = fit_sklearn(texts[:1500], labels[:1500], (1, 3), 2, 4.0, seed=0)
    save_model(vec, clf, tmp_path, threshold=0.5, train_positive_rate=float(labels[:1500].mean()))
    loaded = OffenceModel.load(tmp_path)
    held_out = texts[1500:] + texts[:3]
    np.testing.assert_allclose(loaded.predict_proba(held_out), clf.predict_proba(vec.transform(held_out))[:, 1], rtol=0, atol=1e-6)
    # A tampered vocabulary is refused rather than silently scoring differently.
    (tmp_path / "vocab.parquet").write_bytes((tmp_path / "vocab.parquet").read_bytes() + b"x")
    with pytest.raises(ValueError):
        OffenceModel.load(tmp_path)
