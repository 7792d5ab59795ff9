"""models/offence/README.md, written by `train-flags` from the training run's metrics (so the
numbers in it are the run's, never typed by hand)."""

from __future__ import annotations


def readme(metrics: dict, command: str) -> str:
    p = metrics["params"]
    variants = "\n".join(
        f"| {name} | {v['best']['ngram_range']} | {v['best']['C']} | {v['best']['dev_macro_f1_at_0.5']} |"
        for name, v in metrics["variants"].items()
    )
    return f"""# Offence model (char n-gram TF-IDF + logistic regression)

Probability that a Chinese comment is offensive (COLD's label 1), used by the flag stage
(`pipeline/stages/flag.py`) through `pipeline.models.offence_ngram.OffenceModel`. It is trained on, and
must be given, text normalised by `pipeline.text.normalize.normalize_text` (the `text_norm` column).

## Files
- `vocab.parquet`: term (character n-gram, lower-cased), idf, coef; {metrics["n_features"]:,} features.
- `model.json`: intercept, analyzer (char {p["ngram_range"]}, lowercase, sublinear tf, l2 norm),
  threshold, training description, library versions, format version, sha256 of vocab.parquet.
- `metrics.json`: dev metrics, chosen parameters, the grid.

No pickle: the files are read with pyarrow and json, so the model survives library upgrades.

## Data and licences
- COLD, thu-coai/COLDataset, Apache-2.0: train.csv ({metrics["train_rows"]["cold"]:,} rows) for
  training; dev.csv for every choice, after dropping {metrics["dev_rows_dropped"]} rows that are
  near-copies (the dedup matching key) of a train text ({metrics["dev_rows"]:,} rows left).
- The project's own labelled sets (pipeline/training/data, written by this project; pipeline/training/data/README.md):
  {metrics["train_rows"].get("own", 0):,} training rows (abusive or hate = 1), each repeated
  x{metrics["train_rows"].get("own_repeat", 0)} (the repeat chosen on the hand-labelled real dev split by
  `benchmarks/offence_own_repeat.py`); their held-out and test rows never train.
- SWSR SexComment, aggiejiang/SWSR, MIT: tried as extra training data;
  {"used" if metrics["used_swsr"] else "not used: it lowered macro-F1 on COLD dev"}.

| training data | best n-grams | best C | dev macro-F1 at 0.5 |
|---|---|---|---|
{variants}

## Chosen model
char {p["ngram_range"]}-grams, min_df {p["min_df"]}, C {p["C"]}, keeping the
{p["keep_fraction"]:.0%} of features with the largest |coef| (refit on them).
Trained on COLD train + the own sets' train rows{" + SWSR SexComment" if metrics["used_swsr"] else ""}; COLD dev is held out so
that the numbers below and the threshold describe this exact model.

| COLD dev (deduplicated) | value |
|---|---|
| macro-F1 at threshold {metrics["threshold"]} | {metrics["dev_macro_f1"]} |
| accuracy at threshold {metrics["threshold"]} | {metrics["dev_accuracy"]} |
| macro-F1 at 0.5 | {metrics["dev_macro_f1_at_0.5"]} |

COLD dev comes from the same distribution as train; on COLD's held-out test split this model type
scores about 0.795 macro-F1 (shared/notes/offence-baselines.md), and real comments differ again.
COLD's offensive examples are mostly about groups (race, region, gender); plain personal profanity
is rarer there and scores lower, which is why the flag stage pairs this model with insult lexicons.

## Use
```python
from pipeline.models.offence_ngram import OffenceModel
model = OffenceModel.load(Path("models/offence"))
p = model.predict_proba(texts_norm)          # offensive probability per text
flagged = p >= model.threshold
evidence = model.top_terms(texts_norm[0], 3)  # [(n-gram, log-odds contribution), ...]
```

## Rebuild
From the project root:
```
{command}
```
({metrics["seconds"]} s on the machine that built it; seed {metrics["seed"]}, deterministic.)
"""
