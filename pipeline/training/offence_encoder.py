"""Training the fine-tuned offence encoder (pipeline.models.offence_encoder): kinds "top" and "lora"
from token ids, kind "extra" from precomputed e5 states (pipeline/training/offence_encoder_extra.py),
both through one training loop; `train-flags --encoder` (`--adapt-encoder`: offence_encoder_adapt.py).

Importable with torch and numpy only (the rest is imported where it is used), so that
pipeline/training/gpu_train.py can run these loops on a bare GPU machine.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.metrics import best_threshold, macro_f1
from pipeline.models.offence_encoder import (
    MAX_TOKENS,
    PREFIX,
    ExtraLayersClassifier,
    OffenceClassifier,
    pad_batch,
    pad_states,
    predict_logits,
    predict_logits_from_states,
)
from pipeline.training.offence_data import own_rows, training_texts


def train_loop(
    model: nn.Module,
    n_train: int,
    batch: Callable,
    forward: Callable,
    predict: Callable,
    train_y: np.ndarray,
    dev,
    dev_y: np.ndarray,
    *,
    device: str,
    epochs: int,
    lr: float,
    head_lr: float,
    batch_size: int,
    seed: int,
    also_choose_on: tuple | None = None,
    log=print,
) -> dict:
    """The loop `train` and `train_on_states` share: AdamW (body `lr`, head `head_lr`, weight decay
    0.01), linear warm-up over 6% of the steps then linear decay, BCE loss, gradients clipped at 1.0,
    bf16 autocast on CUDA. `batch(idx)` gives the inputs of those training rows, `forward(*inputs)`
    their logits, `predict(items)` the logits of dev items (numpy). Keeps the epoch with the best dev
    macro-F1 (at its best threshold); with `also_choose_on` (items, labels), the best mean of that and
    the second set's."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.to(device)
    head_params = list(model.head.parameters())
    body_params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    opt = torch.optim.AdamW([{"params": body_params, "lr": lr}, {"params": head_params, "lr": head_lr}], weight_decay=0.01)
    steps = epochs * math.ceil(n_train / batch_size)
    warmup = max(1, int(0.06 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    loss_fn = nn.BCEWithLogitsLoss()
    y_t = torch.tensor(train_y, dtype=torch.float32)
    best: dict = {}
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.time()
        perm = rng.permutation(n_train)
        total = 0.0
        for start in range(0, len(perm), batch_size):
            idx = perm[start : start + batch_size]
            inputs = batch(idx)
            with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda")):
                logits = forward(*inputs)
            loss = loss_fn(logits.float(), y_t[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(body_params + head_params, 1.0)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        prob = 1 / (1 + np.exp(-predict(dev)))
        thr, f1 = best_threshold(dev_y, prob)
        at_half = macro_f1(dev_y, (prob >= 0.5).astype(int))
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / len(perm),
                "dev_macro_f1": f1,
                "threshold": thr,
                "dev_macro_f1_at_0.5": at_half,
                "seconds": time.time() - t0,
            }
        )
        score, also_prob = f1, None
        if also_choose_on is not None:
            also_prob = 1 / (1 + np.exp(-predict(also_choose_on[0])))
            history[-1]["also_macro_f1"] = best_threshold(also_choose_on[1], also_prob)[1]
            score = (f1 + history[-1]["also_macro_f1"]) / 2
        log(json.dumps(history[-1]))
        if score > best.get("score", -1.0):
            state = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
            best = {
                "epoch": epoch,
                "score": score,
                "dev_macro_f1": f1,
                "threshold": thr,
                "dev_prob": prob,
                "also_prob": also_prob,
                "state": state,
            }
    best["history"] = history
    return best


def train(
    model: OffenceClassifier,
    train_seqs: list[np.ndarray],
    train_y: np.ndarray,
    dev_seqs: list[np.ndarray],
    dev_y: np.ndarray,
    *,
    device: str,
    epochs: int = 3,
    lr: float = 5e-5,
    head_lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    pad_id: int = 1,
    also_choose_on: tuple[list[np.ndarray], np.ndarray] | None = None,
    log=print,
) -> dict:
    """Fine-tune the trainable parameters on token ids; keep the epoch with the best dev macro-F1 (at
    its best threshold). With `also_choose_on` (sequences, labels), e.g. the own sets' held-out rows, the
    epoch is the one with the best mean of the two macro-F1s, so that a second kind of data has a say.

    Returns {"epoch", "score", "dev_macro_f1", "threshold", "dev_prob", "also_prob", "history", "state"}
    where state holds the trainable tensors of the best epoch (on CPU)."""

    def batch(idx):
        ids, mask = pad_batch([train_seqs[i] for i in idx], pad_id)
        return ids.to(device), mask.to(device)

    return train_loop(
        model,
        len(train_seqs),
        batch,
        model,
        lambda seqs: predict_logits(model, seqs, device, pad_id=pad_id),
        train_y,
        dev_seqs,
        dev_y,
        device=device,
        epochs=epochs,
        lr=lr,
        head_lr=head_lr,
        batch_size=batch_size,
        seed=seed,
        also_choose_on=also_choose_on,
        log=log,
    )


def train_on_states(
    model: ExtraLayersClassifier,
    train_states: list[torch.Tensor],
    train_y: np.ndarray,
    dev_states: list[torch.Tensor],
    dev_y: np.ndarray,
    *,
    device: str,
    epochs: int = 4,
    lr: float = 2e-4,
    head_lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    log=print,
) -> dict:
    """`train` for kind "extra": the same loop, but the batches are e5 states (see
    pipeline.models.offence_encoder.e5_states), so e5 never runs during training.
    Returns the same dict as `train` (state: the new layers and the head, float32, on CPU)."""
    return train_loop(
        model,
        len(train_states),
        lambda idx: pad_states([train_states[i].to(device) for i in idx]),
        model.forward_states,
        lambda states: predict_logits_from_states(model, states, device),
        train_y,
        dev_states,
        dev_y,
        device=device,
        epochs=epochs,
        lr=lr,
        head_lr=head_lr,
        batch_size=batch_size,
        seed=seed,
        log=log,
    )


def freeze_except_top(bert: nn.Module, top_layers: int) -> None:
    for p in bert.parameters():
        p.requires_grad = False
    for layer in bert.encoder.layer[-top_layers:]:
        for p in layer.parameters():
            p.requires_grad = True


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def tokenize(tokenizer, texts: list[str], max_tokens: int = MAX_TOKENS) -> list[np.ndarray]:
    """Token ids of PREFIX + each text, as the shipped encoder reads them."""
    ids = tokenizer([PREFIX + t for t in texts], truncation=True, max_length=max_tokens)["input_ids"]
    return [np.asarray(s, dtype=np.int64) for s in ids]


# ------------------------------------------------------------------------- `train-flags --encoder`


def stage_top_layers(out_dir: Path, trained: dict[str, torch.Tensor]) -> tuple[Path, str]:
    """Write trained top layers (float16) and head (float32) to a staging folder beside `out_dir`
    (moved into place by the caller with model.json); return the folder and the file's sha256."""
    from safetensors.torch import save_file

    from pipeline.io.fileio import file_sha256

    state = {k: (v.half() if not k.startswith("head.") else v).contiguous() for k, v in trained.items()}
    staging = out_dir.with_name(f".{out_dir.name}.tmp")
    staging.mkdir(parents=True, exist_ok=True)
    save_file(state, str(staging / "top_layers.safetensors"))
    return staging, file_sha256(staging / "top_layers.safetensors")


def train_encoder(
    cold_dir: Path,
    own_sets: list[Path],
    out_dir: Path,
    *,
    device: str = "cpu",
    epochs: int = 3,
    top_layers: int = 4,
    own_repeat: int = 10,
    limit: int = 0,
    seed: int = 0,
    log=print,
) -> dict:
    """Fine-tune the top layers and head on COLD train plus the own sets' training rows (repeated
    `own_repeat` times), choose the threshold on COLD dev without train texts and the epoch on it
    together with the own sets' held-out rows (see `train`),
    and write `top_layers.safetensors` and `model.json` to `out_dir`. A GPU takes about 2 minutes;
    two CPU cores take hours (`limit` trains on that many rows only, for a smoke test)."""
    from transformers import AutoTokenizer, BertModel

    from pipeline.io.fileio import replace_dir
    from pipeline.models import e5_model

    train_x, train_y, dev, own = training_texts(cold_dir, own_sets)
    if limit:
        train_x, train_y, dev = train_x[:limit], train_y[:limit], dev[:limit]
    texts = train_x + [t for t, _ in own] * own_repeat
    labels = np.array(train_y + [y for _, y in own] * own_repeat)

    base_dir = e5_model.ensure_model()
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    bert = BertModel.from_pretrained(str(base_dir), add_pooling_layer=False)
    freeze_except_top(bert, top_layers)
    model = OffenceClassifier(bert)
    dev_y = np.array([y for _, y in dev])
    heldout = own_rows(own_sets, "heldout")
    also = (tokenize(tokenizer, [t for t, _ in heldout]), np.array([y for _, y in heldout])) if heldout else None
    best = train(
        model,
        tokenize(tokenizer, texts),
        labels,
        tokenize(tokenizer, [t for t, _ in dev]),
        dev_y,
        device=device,
        epochs=epochs,
        seed=seed,
        pad_id=tokenizer.pad_token_id,
        also_choose_on=also,
        log=log,
    )

    staging, digest = stage_top_layers(out_dir, best["state"])
    meta = {
        "format_version": 1,
        "kind": "top",
        "top_layers": top_layers,
        "predicts": "probability that a comment is offensive (COLD label 1, or abusive/hate in the project's own sets)",
        "input": f"text normalised by pipeline.text.normalize.normalize_text, prefixed '{PREFIX}', at most {MAX_TOKENS} tokens",
        "base_model": e5_model.MODEL_ID,
        "threshold": best["threshold"],
        "train_positive_rate": float(np.mean(train_y)),
        "weights": {
            "file": "top_layers.safetensors",
            "sha256": digest,
            "holds": f"the top {top_layers} encoder layers (float16) and the linear head (float32)",
        },
        "training": {
            "data": {
                "cold": "thu-coai/COLDataset train.csv (Apache-2.0)",
                "own": [f"{p.name} (train rows, x{own_repeat})" for p in own_sets],
            },
            "rows": {"cold": len(train_x), "own": len(own)},
            "selection": f"COLD dev.csv without rows whose text is in train ({len(dev)} rows): threshold; epoch: "
            + (f"best mean macro-F1 of COLD dev and the own sets' held-out rows ({len(heldout)})" if heldout else "best COLD dev macro-F1"),
            "params": {
                "lr": 1e-4,
                "head_lr": 1e-3,
                "epochs": epochs,
                "best_epoch": best["epoch"],
                "batch_size": 32,
                "seed": seed,
                "weight_decay": 0.01,
                "warmup": 0.06,
            },
            "device": device,
            "history": best["history"],
            "command": f"python -m pipeline train-flags --encoder --device {device}",
        },
        "dev_macro_f1": best["dev_macro_f1"],
    }
    save_json(staging / "model.json", meta)
    replace_dir(staging, out_dir)
    return meta
