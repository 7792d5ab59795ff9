"""The offence models' training rows: COLD (train, and dev without train texts) and the project's own
labelled sets (pipeline/training/data/, config.OWN_LABELLED_SETS) split into train / heldout / test.

Plain csv, no polars: the GPU bundle script (pipeline/training/gpu_bundle.py) reads its data
through this too, and the encoder training modules stay importable without the project's other
dependencies.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.text.match_key import match_key
from pipeline.text.normalize import normalize_text


def own_split(row: dict) -> str:
    """Which part of the project's own labelled sets a row belongs to: "train" (may train a model),
    "heldout" (may choose an epoch or a threshold) or "test" (never used to train or choose).
    A set with a `split` column says so itself (thread_dev.csv: train / test, by thread); the
    others are halved by id: even numbers train, odd ones stay held out."""
    split = (row.get("split") or "").strip()
    if split:
        if split not in ("train", "heldout", "test"):
            raise ValueError(f"row {row.get('id')!r}: split {split!r} is not train, heldout or test")
        return split
    digits = (row.get("id") or "").lstrip("abcdefghijklmnopqrstuvwxyz_")
    if not digits.isdigit():
        raise ValueError(
            f"row id {row.get('id')!r}: without a split column (train / heldout / test) a labelled set "
            f"is halved by id, which must be letters then a number, e.g. a012"
        )
    return "train" if int(digits) % 2 == 0 else "heldout"


def own_rows(own_sets: list[Path], part: str) -> list[tuple[str, int]]:
    """(normalised text, abusive or hate) of the own sets' rows in `part` (see `own_split`)."""
    rows = []
    for path in own_sets:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows += [(normalize_text(r["text"]), int(r["abusive"]) | int(r["hate"])) for r in csv.DictReader(f) if own_split(r) == part]
    return rows


def training_texts(cold_dir: Path, own_sets: list[Path]) -> tuple[list[str], list[int], list[tuple[str, int]], list[tuple[str, int]]]:
    """Normalised (COLD train texts, labels, COLD dev pairs without train texts, own training pairs)."""

    def read_csv(path: Path) -> list[dict]:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return list(csv.DictReader(f))

    cold_train = read_csv(cold_dir / "train.csv")
    train_x = [normalize_text(r["TEXT"]) for r in cold_train]
    train_y = [int(r["label"]) for r in cold_train]
    seen = {match_key(t) for t in train_x}
    dev = [(normalize_text(r["TEXT"]), int(r["label"])) for r in read_csv(cold_dir / "dev.csv")]
    dev = [(t, y) for t, y in dev if match_key(t) not in seen]  # COLD's dev repeats train rows, some near-copies
    return train_x, train_y, dev, own_rows(own_sets, "train")
