"""The project's own labelled sets (`config.OWN_LABELLED_SETS`) train and choose the flag models, so
a broken row would silently change what ships: every row must parse, and a thread must never be
split between training and evaluation."""

import csv
from collections import defaultdict

import pytest

from pipeline.config import OWN_LABELLED_SETS
from pipeline.training.offence_data import own_split


@pytest.mark.parametrize("path", OWN_LABELLED_SETS, ids=lambda p: p.name)
def test_own_set_rows_parse_with_unique_ids_and_binary_labels(path):
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows, f"{path}: no rows"
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), f"{path}: duplicate ids"
    for n, r in enumerate(rows, start=2):
        assert r["text"].strip(), f"{path}:{n}: empty text"
        for col in ("abusive", "hate", "conspiracy"):
            assert r[col] in ("0", "1"), f"{path}:{n}: {col}={r[col]!r}"
        assert own_split(r) in ("train", "heldout", "test"), f"{path}:{n}"


def test_each_thread_lies_in_one_split_and_the_test_threads_stay_the_same():
    path = next(p for p in OWN_LABELLED_SETS if p.name == "thread_dev.csv")
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    splits = defaultdict(set)
    for r in rows:
        splits[r["thread"]].add(r["split"])
    assert all(len(s) == 1 for s in splits.values()), {t: s for t, s in splits.items() if len(s) > 1}
    # Numbers on the test threads are reported as held out: they must never move into training.
    assert sorted(t for t, s in splits.items() if s == {"test"}) == ["ta_t2", "ta_t4", "tb_t2", "tb_t4", "tc_t2", "tc_t4"]
