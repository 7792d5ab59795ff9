"""Training kind "extra" of the offence encoder (models/offence_encoder_extra/): new layers and a head
on top of the unchanged e5, trained on e5's states (pipeline/training/offence_encoder.py's loop), and
the folder that ships them. The shipped copy was trained on a GPU by pipeline/training/gpu_train.py
and installed by `python -m pipeline.training.package_encoder extra`, which writes it through
`write_extra_model` too.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeline.models.offence_encoder import EXTRA_MAX_TOKENS, EXTRA_WEIGHTS_FILE, PREFIX, ExtraLayersClassifier, _load_bert, e5_states
from pipeline.training.offence_data import training_texts
from pipeline.training.offence_encoder import save_json, tokenize, train_on_states


def write_extra_model(out_dir: Path, best: dict, *, extra_layers: int, train_positive_rate: float, training: dict) -> dict:
    """Write `extra_layers.safetensors` (the new layers in float16, the head in float32) and
    `model.json` for kind "extra" into `out_dir`, replacing it whole. `best`: what `train_on_states`
    returns (state, threshold, dev_macro_f1)."""
    from safetensors.torch import save_file

    from pipeline.io.fileio import file_sha256, replace_dir
    from pipeline.models import e5_model

    state = {k: (v.half() if k.startswith("layers.") else v.float()).contiguous() for k, v in best["state"].items()}
    if not state or not all(k.startswith(("layers.", "head.")) for k in state):
        raise ValueError(f"not the state of an ExtraLayersClassifier: {sorted(state)[:3]}")
    staging = out_dir.with_name(f".{out_dir.name}.tmp")
    staging.mkdir(parents=True, exist_ok=True)
    save_file(state, str(staging / EXTRA_WEIGHTS_FILE))
    meta = {
        "format_version": 1,
        "kind": "extra",
        "extra_layers": extra_layers,
        "predicts": "probability that a comment is offensive (COLD label 1, or abusive/hate in the project's own sets)",
        "input": f"e5's final token states (sentence-transformers 'token_embeddings') of '{PREFIX}' + text normalised "
        f"by pipeline.text.normalize.normalize_text, at most {EXTRA_MAX_TOKENS} tokens, and their attention mask",
        "max_tokens": EXTRA_MAX_TOKENS,
        "base_model": e5_model.MODEL_ID,
        "threshold": best["threshold"],
        "train_positive_rate": float(train_positive_rate),
        "weights": {
            "file": EXTRA_WEIGHTS_FILE,
            "sha256": file_sha256(staging / EXTRA_WEIGHTS_FILE),
            "holds": f"{extra_layers} new encoder layer(s) on top of the unchanged e5 (float16; initialised "
            f"as copies of e5's last layer) and the linear head over their mean-pooled tokens (float32)",
        },
        "training": training,
        "dev_macro_f1": best["dev_macro_f1"],
    }
    save_json(staging / "model.json", meta)
    replace_dir(staging, out_dir)
    return meta


def train_extra_encoder(
    cold_dir: Path,
    own_sets: list[Path],
    out_dir: Path,
    *,
    device: str = "cpu",
    epochs: int = 4,
    extra_layers: int = 1,
    lr: float = 2e-4,
    own_repeat: int = 6,
    limit: int = 0,
    seed: int = 0,
    log=print,
) -> dict:
    """Kind "extra": e5's states of every text once, then the new layers and head trained on them
    (COLD train plus the even half of the own sets, repeated `own_repeat` times), the epoch and
    threshold chosen on COLD dev without train texts; writes `out_dir`. Since e5 runs once per
    text and only the new layers train, two CPU cores manage it (e5 over ~32,000 texts dominates)."""
    from transformers import AutoTokenizer

    from pipeline.models import e5_model

    t_start = time.time()
    train_x, train_y, dev, own = training_texts(cold_dir, own_sets)
    if limit:
        train_x, train_y, dev = train_x[:limit], train_y[:limit], dev[:limit]
    base_dir = e5_model.ensure_model()
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    bert = _load_bert(base_dir)
    distinct = train_x + [t for t, _ in own] + [t for t, _ in dev]
    ids = tokenize(tokenizer, distinct, EXTRA_MAX_TOKENS)
    states = e5_states(bert, ids, device, pad_id=tokenizer.pad_token_id)
    n_train, n_own = len(train_x), len(own)
    own_states = states[n_train : n_train + n_own]
    train_states = states[:n_train] + own_states * own_repeat  # repeats share their tensors
    labels = np.array(train_y + [y for _, y in own] * own_repeat)
    dev_y = np.array([y for _, y in dev])
    model = ExtraLayersClassifier.from_bert(bert, extra_layers)
    best = train_on_states(
        model, train_states, labels, states[n_train + n_own :], dev_y, device=device, epochs=epochs, lr=lr, seed=seed, log=log
    )
    training = {
        "data": {
            "cold": "thu-coai/COLDataset train.csv (Apache-2.0)",
            "own": [f"{p.name} (even-numbered ids, x{own_repeat})" for p in own_sets],
        },
        "rows": {"cold": len(train_x), "own": n_own},
        "selection": f"COLD dev.csv without rows whose text is in train ({len(dev)} rows): best epoch and threshold",
        "params": {
            "lr": lr,
            "head_lr": 1e-3,
            "epochs": epochs,
            "best_epoch": best["epoch"],
            "batch_size": 32,
            "seed": seed,
            "weight_decay": 0.01,
            "warmup": 0.06,
        },
        "device": f"{device}, {time.time() - t_start:.0f} s",
        "history": best["history"],
        "command": "pipeline.training.offence_encoder_extra.train_extra_encoder",
    }
    return write_extra_model(out_dir, best, extra_layers=extra_layers, train_positive_rate=float(np.mean(train_y)), training=training)
