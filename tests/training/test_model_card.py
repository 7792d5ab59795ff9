"""Each shipped model's MODEL_CARD.md is what its metadata file gives: cards cannot drift."""

from __future__ import annotations

import pytest

from conftest import PROJECT
from pipeline.training import model_card


@pytest.mark.parametrize("name", sorted(model_card.SHIPPED))
def test_each_card_on_disk_is_generated_from_its_model_metadata(name):
    folder = PROJECT / "models" / name
    on_disk = (folder / model_card.CARD).read_text(encoding="utf-8")
    assert on_disk == model_card.card_for(folder), f"run `python -m pipeline.training.model_card` ({name})"
    assert "## Rebuild" in on_disk and "python -m pipeline" in on_disk


def test_a_changed_record_changes_the_card():
    meta = {"kind": "ngram", "predicts": "offence", "training": {"rows": 10, "data": ["x.csv"]}, "threshold": 0.5}
    card = model_card.render("offence", meta)
    assert "threshold: 0.5" in card and "rows: 10" in card
    assert model_card.render("offence", meta | {"threshold": 0.6}) != card
