"""The spam flag on the written dev sets it was tuned on (a guard against losing that tuning).

The test split (spam_test.csv) is not asserted here: its errors stay unread, and a failing test
would invite reading them. `python benchmarks/spam.py --split test` reports it.
"""

import sys

import pytest

from pipeline.config import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
from spam import measure  # noqa: E402


@pytest.mark.parametrize("split,min_f1", [("dev", 0.97), ("dev2", 0.9), ("dev3", 0.97)])
def test_spam_flag_on_the_written_dev_sets(split, min_f1):
    result, rows = measure(split)
    assert rows.height >= 330 and result["spam"] >= 100
    assert result["f1"] >= min_f1, result
    assert result["hard_negatives_flagged"] <= 0.05, result
    assert result["ordinary_flagged"] == 0.0, result
