"""`train-flags --adapt-encoder`: continue fine-tuning the shipped offence encoder on labelled
comments of the platform (the project's own sets by default), with a replay of COLD rows so it does
not forget COLD, choosing the epoch on the own sets' held-out rows; then the blend is refit.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeline.metrics import best_threshold
from pipeline.models.offence_encoder import MAX_TOKENS, OffenceEncoder
from pipeline.training.offence_data import own_rows, training_texts
from pipeline.training.offence_encoder import freeze_except_top, save_json, stage_top_layers, tokenize, train


def adapt_encoder(
    model_dir: Path,
    cold_dir: Path,
    own_sets: list[Path],
    out_dir: Path,
    *,
    device: str = "cpu",
    epochs: int = 3,
    own_repeat: int = 3,
    cold_replay: int = 3000,
    lr: float = 2e-5,
    seed: int = 0,
    log=print,
) -> dict:
    """Continue fine-tuning a shipped top-layer encoder (kind "top") on comments like the platform's:
    the own sets' training rows (x `own_repeat`) mixed with a seeded sample of `cold_replay` COLD
    train rows, so that it keeps what it learnt on COLD. The epoch and threshold are chosen on the
    own sets' held-out rows; "test" rows are never read. Writes `out_dir` (it may be `model_dir`).

    COLD's offensive comments are mostly about groups; news threads offend mostly by contempt for a
    person ("吹牛大王", "什么东西"), and COLD's model also reads some civil complaints as offensive
    ("公司都被打压了"). Two CPU cores: about 17 minutes an epoch with the defaults and the project's sets
    (3,040 own training rows x3 + 3,000 COLD rows: 1,030 s measured); it grows with the own sets."""
    import random

    from pipeline.io.fileio import replace_dir

    encoder = OffenceEncoder.load(model_dir)
    if encoder.meta["kind"] != "top":
        raise ValueError(f"{model_dir}: adapting needs an encoder of kind 'top', not {encoder.meta['kind']!r}")
    t_start = time.time()
    train_x, train_y, _, _ = training_texts(cold_dir, [])
    replay = random.Random(seed).sample(range(len(train_x)), min(cold_replay, len(train_x)))
    own, heldout = own_rows(own_sets, "train"), own_rows(own_sets, "heldout")
    if not own or not heldout:
        raise ValueError(
            f"{', '.join(map(str, own_sets))}: adapting needs own rows to train on and held-out rows "
            f"to choose the epoch (got {len(own)} and {len(heldout)}); see own_split"
        )
    texts = [t for t, _ in own] * own_repeat + [train_x[i] for i in replay]
    labels = np.array([y for _, y in own] * own_repeat + [train_y[i] for i in replay])
    tokenizer, model = encoder.tokenizer, encoder.model
    freeze_except_top(model.bert, int(encoder.meta["top_layers"]))

    before = 1 / (1 + np.exp(-encoder.logits([t for t, _ in heldout])))
    heldout_y = np.array([y for _, y in heldout])
    best = train(
        model,
        tokenize(tokenizer, texts),
        labels,
        tokenize(tokenizer, [t for t, _ in heldout]),
        heldout_y,
        device=device,
        epochs=epochs,
        lr=lr,
        head_lr=lr * 5,
        seed=seed,
        pad_id=tokenizer.pad_token_id,
        log=log,
    )
    staging, digest = stage_top_layers(out_dir, best["state"])
    meta = dict(encoder.meta)
    meta.pop("blend_with_ngram", None)  # fitted for the encoder before; refit by the caller
    meta["weights"] = dict(meta["weights"], sha256=digest)
    meta["threshold_own_heldout"] = best["threshold"]
    if "adaptation" in meta:  # adapting an adapted encoder: keep the record of each earlier step
        meta["earlier_adaptations"] = meta.get("earlier_adaptations", []) + [meta["adaptation"]]
    meta["adaptation"] = {
        "from": f"{model_dir.name} (weights sha256 {encoder.meta['weights']['sha256'][:12]})",
        "data": {
            "own": [f"{p.name} (train rows, x{own_repeat})" for p in own_sets],
            "cold_replay": f"{len(replay)} rows of COLD train.csv sampled with seed {seed}",
        },
        "rows": {"own": len(own), "cold_replay": len(replay)},
        "selection": f"own sets' held-out rows ({len(heldout)}): best epoch; macro-F1 at the best threshold "
        f"{best_threshold(heldout_y, before)[1]:.3f} before, {best['dev_macro_f1']:.3f} after",
        "params": {
            "lr": lr,
            "head_lr": lr * 5,
            "epochs": epochs,
            "best_epoch": best["epoch"],
            "batch_size": 32,
            "seed": seed,
            "max_tokens": MAX_TOKENS,
        },
        "device": f"{device}, {time.time() - t_start:.0f} s",
        "history": best["history"],
        "command": "python -m pipeline train-flags --adapt-encoder",
    }
    save_json(staging / "model.json", meta)
    replace_dir(staging, out_dir)
    return meta
