"""`python -m pipeline evaluate`: flags against labels, per category and overall.

Runs only what flags need (read, ingest, embed, flag): no dedup or topics. Labels: a CSV or parquet with 0/1 columns named after categories (`abuse` or `abusive`,
`hate`, `conspiracy`) and/or `offensive` (or COLD's `label`), scored against `flag_abuse or flag_hate`.
Rows are matched by `comment_id` when the labels have one, otherwise by position.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.config import Config
from pipeline.io import readers
from pipeline.metrics import precision_recall_f1
from pipeline.runner import default_cache_dir
from pipeline.stage import StageContext
from pipeline.stages import embed, flag, ingest

LABEL_COLUMNS = {"abuse": ("abuse", "abusive"), "hate": ("hate",), "conspiracy": ("conspiracy",), "offensive": ("offensive", "label")}


def predictions(inputs: list[Path], cfg: Config) -> pl.DataFrame:
    raw = readers.read_inputs(
        inputs, cfg.ingest.id_column, cfg.ingest.text_column, cfg.ingest.thread_comments_start, cfg.ingest.context_columns
    )
    ctx = StageContext(seed=cfg.run.seed, cache_dir=default_cache_dir(cfg), state_dir=None, progress=False, embed_config=cfg.embed)
    table = ingest.run(raw, cfg.ingest, ctx)
    table = embed.run(table, cfg.embed, ctx)
    table = flag.run(table, cfg.flag, ctx)
    return table.with_columns((pl.col("flag_abuse") | pl.col("flag_hate")).alias("flag_offensive"))


def read_labels(path: Path) -> pl.DataFrame:
    if not path.exists():
        raise readers.InputFileError(f"{path}: labels file not found")
    return pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema_length=0)


def scores(truth: list[bool], pred: list[bool]) -> dict:
    y, p = np.array(truth, dtype=bool), np.array(pred, dtype=bool)
    tp, fp, fn = int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum())
    tn = len(truth) - tp - fp - fn
    prec, rec, f1 = precision_recall_f1(y, p)
    # F1 of the negative class too, for the macro-F1 that COLD and ToxiCN report.
    nf1 = precision_recall_f1(~y, ~p)[2]
    return {
        "n": len(truth),
        "positives": tp + fn,
        "flagged": tp + fp,
        "precision": round(prec, 4),
        "recall": round(rec, 4),
        "f1": round(f1, 4),
        "macro_f1": round((f1 + nf1) / 2, 4),
        "accuracy": round((tp + tn) / len(truth), 4) if truth else 0.0,
    }


def evaluate(inputs: list[Path], labels_path: Path, cfg: Config) -> dict:
    pred = predictions(inputs, cfg)
    labels = read_labels(labels_path)
    if cfg.ingest.id_column in labels.columns:
        joined = pred.join(
            labels.with_columns(pl.col(cfg.ingest.id_column).cast(pl.String).alias("comment_id")),
            on="comment_id",
            how="inner",
            suffix="_label",
        )
    elif labels.height == pred.height:
        joined = pl.concat([pred, labels.select(pl.all().name.suffix("_label"))], how="horizontal")
    else:
        raise readers.InputFileError(
            f"{labels_path}: no {cfg.ingest.id_column!r} column and {labels.height} rows "
            f"for {pred.height} comments; add ids or give one label row per comment"
        )
    truths = {}
    for category, names in LABEL_COLUMNS.items():
        name = next((n for n in names if n in labels.columns), None)
        if name is None:
            continue
        col = name if name in joined.columns and name not in pred.columns else f"{name}_label"
        truths[category] = [str(v).strip() in ("1", "1.0", "True", "true") for v in joined[col].to_list()]
    if not truths:
        raise readers.InputFileError(
            f"{labels_path}: no label columns; expected some of " + ", ".join(n for names in LABEL_COLUMNS.values() for n in names)
        )
    result = {category: scores(truth, joined[f"flag_{category}"].to_list()) for category, truth in truths.items()}
    result["macro_f1_mean"] = round(sum(r["macro_f1"] for r in result.values()) / len(result), 4)
    personal = [truths[c] for c in ("abuse", "hate") if c in truths]
    if "offensive" not in truths and personal:
        # What COLD and ToxiCN call offensive: abusive or hateful. Not part of the mean (it repeats them).
        result["offensive"] = scores([any(t) for t in zip(*personal)], joined["flag_offensive"].to_list())
    flagged_any = (joined["flag_abuse"] | joined["flag_hate"] | joined["flag_conspiracy"]).to_list()
    clean = [not any(t) for t in zip(*truths.values())]
    n_clean = sum(clean)
    n_flagged = sum(f for f, c in zip(flagged_any, clean) if c)
    # The moderators' cost: comments labelled clean in every given category that get any flag.
    result["clean_flagged"] = {"n": n_clean, "flagged": n_flagged, "share": round(n_flagged / n_clean, 4) if n_clean else 0.0}
    return result


def format_table(result: dict) -> str:
    lines = [f"{'category':<12}{'n':>7}{'pos':>7}{'flagged':>9}{'prec':>8}{'recall':>8}{'f1':>8}{'macroF1':>9}{'acc':>8}"]
    for cat, r in result.items():
        if isinstance(r, dict) and "precision" in r:
            lines.append(
                f"{cat:<12}{r['n']:>7}{r['positives']:>7}{r['flagged']:>9}{r['precision']:>8.3f}"
                f"{r['recall']:>8.3f}{r['f1']:>8.3f}{r['macro_f1']:>9.3f}{r['accuracy']:>8.3f}"
            )
    clean = result.get("clean_flagged")
    if clean:
        lines.append(f"clean comments flagged in any category: {clean['flagged']} of {clean['n']} ({clean['share']:.1%})")
    return "\n".join(lines) + "\n" + json.dumps(result, ensure_ascii=False)
