"""Adapting the shipped offence encoder to one's own labelled comments, and refitting the blend.

The adaptation test runs the real command path on the real encoder with a few rows (one epoch on
CPU, about a minute); it needs COLD in ../shared for the replay sample.
"""

import csv
import json
import shutil

import numpy as np
import pytest

from conftest import SHARED, needs_shared
from pipeline.config import PROJECT_ROOT
from pipeline.models.offence_encoder import OffenceEncoder
from pipeline.training import offence_blend
from pipeline.training.offence_data import own_rows, own_split
from pipeline.training.offence_encoder_adapt import adapt_encoder

COLD = SHARED / "datasets" / "cold"


def test_own_split_reads_a_split_column_or_halves_by_id():
    assert own_split({"id": "a002"}) == "train" and own_split({"id": "d013"}) == "heldout"
    assert own_split({"id": "ta004"}) == "train"
    assert own_split({"id": "ta004", "split": "test"}) == "test"
    assert own_split({"id": "x1", "split": "heldout"}) == "heldout"
    with pytest.raises(ValueError, match="split 'dev'"):
        own_split({"id": "x1", "split": "dev"})
    with pytest.raises(ValueError, match="halved by id"):
        own_split({"id": "c-5"})


def write_own(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "text", "abusive", "hate", "conspiracy", "split"])
        w.writeheader()
        w.writerows(rows)
    return path


def own_set(path):
    insults = ["这种人也配叫企业家？呸", "吹牛大王，骗子一个", "什么东西，滚", "傻逼老板", "狗东西不干人事"]
    civil = ["这个决定太草率了", "销量下滑是市场问题", "希望早日解决", "产品做得一般", "价格有点贵"]
    rows = [
        {"id": f"u{i}", "text": t, "abusive": 1, "hate": 0, "conspiracy": 0, "split": s}
        for i, (t, s) in enumerate(zip(insults, ["train", "train", "train", "heldout", "heldout"]))
    ]
    rows += [
        {"id": f"c{i}", "text": t, "abusive": 0, "hate": 0, "conspiracy": 0, "split": s}
        for i, (t, s) in enumerate(zip(civil, ["train", "train", "train", "heldout", "heldout"]))
    ]
    # A test row is never read: its label would not even parse.
    rows.append({"id": "t1", "text": "不会被读到", "abusive": "x", "hate": "x", "conspiracy": 0, "split": "test"})
    return write_own(path, rows)


def test_own_rows_skip_the_test_split(tmp_path):
    path = own_set(tmp_path / "own.csv")
    assert len(own_rows([path], "train")) == 6 and len(own_rows([path], "heldout")) == 4
    with pytest.raises(ValueError):  # the test row's labels do not parse: proof the others never read it
        own_rows([path], "test")


def test_blend_fit_counts_each_part_equally():
    rng = np.random.default_rng(0)

    # Part A: the encoder separates the classes, the n-grams are noise. Part B, 10x smaller: the same.
    def part(n):
        y = rng.integers(0, 2, n)
        return np.column_stack([np.where(y == 1, 2.0, -2.0) + rng.normal(0, 0.5, n), rng.normal(0, 1, n)]), y

    fitted = offence_blend.fit({"a": part(1000), "b": part(100)})
    assert fitted["encoder"] > 1.0 and abs(fitted["ngram"]) < 0.5
    assert set(fitted["cv_macro_f1"]) == {"a", "b"} and min(fitted["cv_macro_f1"].values()) > 0.95


@needs_shared(COLD / "train.csv")
@pytest.mark.slow
def test_adapt_writes_a_loadable_encoder_and_refits_its_blend(tmp_path):
    model_dir = tmp_path / "offence_encoder"
    shutil.copytree(PROJECT_ROOT / "models" / "offence_encoder", model_dir)
    own = own_set(tmp_path / "own.csv")
    before = OffenceEncoder.load(model_dir)
    meta = adapt_encoder(model_dir, COLD, [own], model_dir, epochs=1, cold_replay=16, lr=1e-4, log=lambda _: None)
    adapted = OffenceEncoder.load(model_dir)
    assert meta["adaptation"]["rows"] == {"own": 6, "cold_replay": 16}
    # The shipped encoder was adapted once already: that step's record is kept, not overwritten.
    assert meta["earlier_adaptations"][-1] == before.meta["adaptation"]
    assert "blend_with_ngram" not in json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    texts = ["吹牛大王，骗子一个", "这个决定太草率了"]
    assert not np.allclose(before.logits(texts), adapted.logits(texts))  # it did train
    # The blend refit, on a small COLD dev: the held-out own rows plus COLD dev.
    small_cold = tmp_path / "cold"
    small_cold.mkdir()
    shutil.copy(COLD / "train.csv", small_cold / "train.csv")
    with open(COLD / "dev.csv", encoding="utf-8-sig") as f:
        (small_cold / "dev.csv").write_text("".join(f.readline() for _ in range(61)), encoding="utf-8")
    blend = offence_blend.refit(model_dir, PROJECT_ROOT / "models" / "offence", small_cold, [own], log=lambda _: None)
    assert set(blend["cv_macro_f1"]) == {"cold_dev", "own_heldout"}
    stored = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))["blend_with_ngram"]
    assert stored["encoder"] == blend["encoder"] and "own sets' held-out rows (4)" in stored["fitted"]


@pytest.mark.slow
def test_training_chooses_the_epoch_on_both_dev_sets_when_given_two():
    """`train(also_choose_on=...)` keeps the epoch with the best mean macro-F1 of COLD dev and the
    second set; a small randomly initialised BERT is enough to exercise the loop on CPU."""
    import torch
    from transformers import BertConfig, BertModel

    from pipeline.models.offence_encoder import OffenceClassifier
    from pipeline.training.offence_encoder import train

    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, max_position_embeddings=32
        ),
        add_pooling_layer=False,
    )
    rng = np.random.default_rng(0)

    # Label 1 sequences use tokens 20-39, label 0 ones tokens 2-19: learnable in a few epochs.
    def rows(n):
        y = rng.integers(0, 2, n)
        return [rng.integers(20, 40, 6) if v else rng.integers(2, 20, 6) for v in y], y

    train_x, train_y = rows(64)
    dev_x, dev_y = rows(24)
    also_x, also_y = rows(24)
    also_y = 1 - also_y  # a second set that disagrees: its F1 falls as dev's rises
    best = train(
        OffenceClassifier(bert),
        train_x,
        train_y,
        dev_x,
        dev_y,
        device="cpu",
        epochs=3,
        lr=1e-3,
        batch_size=16,
        also_choose_on=(also_x, also_y),
        log=lambda _: None,
    )
    history = best["history"]
    assert all("also_macro_f1" in h for h in history) and best["also_prob"].shape == (24,)
    means = [(h["dev_macro_f1"] + h["also_macro_f1"]) / 2 for h in history]
    assert best["epoch"] == int(np.argmax(means)) + 1
    assert best["score"] == pytest.approx(max(means))
