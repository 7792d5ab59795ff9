import json

import numpy as np
import polars as pl
import pytest

from pipeline.config import OWN_LABELLED_SETS, EmbedConfig
from pipeline.models.conspiracy_model import ConspiracyHead
from pipeline.models.e5_model import default_cache_dir
from pipeline.stage import StageContext
from pipeline.stages import embed
from pipeline.text.normalize import normalize_text
from pipeline.training import conspiracy

DATA = OWN_LABELLED_SETS[0].parent
DEV = DATA / "conspiracy_dev.csv"


def vectors(texts):
    ctx = StageContext(seed=0, cache_dir=default_cache_dir(), state_dir=None, progress=False)
    table = embed.run(pl.DataFrame({"text_norm": [normalize_text(t) for t in texts]}), EmbedConfig(), ctx)
    return table["embedding"].to_numpy().astype(np.float32)


def test_dev_set_is_labelled_as_documented():
    dev = pl.read_csv(DEV, infer_schema_length=0)
    assert dev.height >= 300 and dev["text"].n_unique() == dev.height
    share = dev["conspiracy"].cast(pl.Int64).mean()
    assert 0.25 <= share <= 0.4
    assert (dev["kind"] == "hard_negative").sum() >= 100


def test_folds_keep_each_thread_in_one_fold():
    rows = conspiracy.own_rows([DATA / "conspiracy_genres.csv"])
    groups = rows["group"].to_list()
    for train_idx, test_idx in conspiracy.grouped_folds(rows["conspiracy"].to_numpy(), groups, seed=0):
        assert not {groups[i] for i in train_idx} & {groups[i] for i in test_idx}


@pytest.mark.slow
def test_train_cross_validates_and_the_saved_head_scores_and_explains(tmp_path):
    metrics = conspiracy.train([DEV], tmp_path / "conspiracy")
    assert set(metrics["by_signal"]) >= {"rules", "model"}
    assert metrics["by_signal"]["model"]["at_0.5"]["f1"] > metrics["by_signal"]["rules"]["at_0.5"]["f1"]
    head = ConspiracyHead.load(tmp_path / "conspiracy")
    assert json.loads((tmp_path / "conspiracy" / "head.json").read_text())["metrics"]["rows"] == metrics["rows"]
    v = vectors(["这次股市暴跌都是境外势力在背后一手操控的", "今天的晚饭很好吃"])
    p = head.predict_proba(v)
    assert p[0] > p[1] and 0 <= p.min() and p.max() <= 1
    examples, sims = head.nearest(v)
    dev = pl.read_csv(DEV, infer_schema_length=0).filter(pl.col("conspiracy") == "1")
    assert set(examples) <= set(dev["text"].to_list()) and (sims <= 1.0001).all()
