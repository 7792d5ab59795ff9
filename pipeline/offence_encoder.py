"""Offence classifier fine-tuned from the e5 encoder: LoRA adapters or re-trained top layers, and a head.

Why: character n-grams top out near 0.79 macro-F1 on COLD's test split; a fine-tuned encoder reads
context ("你真是个人才" is praise, "你真是个人才啊，这都能搞砸" is not). What ships is small: either the
LoRA matrices of every attention/FFN projection or the weights of the top `top_layers` layers, plus a
linear head over the mean-pooled tokens. The base weights come from the e5 model the project rebuilds
(pipeline.e5_model), so `models/offence_encoder/` holds only the difference.

This module needs torch, numpy and safetensors only (no polars), so training can run on a bare GPU
machine from a token bundle (see `benchmarks/offence_encoder_bundle.py`).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

PREFIX = "query: "  # the embed stage's e5 prompt: the classifier reads text the way the encoder was trained to
MAX_TOKENS = 128  # COLD comments are short; truncation at 128 tokens cuts under 1% of them
LORA_TARGETS = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")


class LoRALinear(nn.Module):
    """y = W x + (alpha / r) * B A x, with W frozen (Hu et al., 2021)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.05):
        super().__init__()
        self.base = base
        self.scale = alpha / r
        self.lora_a = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.base(x) + (self.dropout(x) @ self.lora_a.T @ self.lora_b.T) * self.scale


def _named_targets(encoder: nn.Module):
    for name, module in encoder.named_modules():
        if isinstance(module, nn.Linear) and "encoder.layer." in f"encoder.{name}" and name.endswith(LORA_TARGETS):
            yield name, module


def add_lora(bert: nn.Module, r: int, alpha: float) -> list[str]:
    """Wrap every attention and feed-forward projection of `bert.encoder` in a LoRALinear."""
    names = []
    for name, module in list(_named_targets(bert.encoder)):
        parent_name, _, child = name.rpartition(".")
        setattr(bert.encoder.get_submodule(parent_name), child, LoRALinear(module, r, alpha))
        names.append(f"encoder.{name}")
    return names


def merge_lora(bert: nn.Module, deltas: dict[str, torch.Tensor]) -> None:
    """Add the shipped low-rank products into the base weights in place (no extra cost per token)."""
    with torch.no_grad():
        for name, delta in deltas.items():
            weight = bert.get_submodule(name).weight
            weight += delta.to(weight.dtype)


class OffenceClassifier(nn.Module):
    """e5 encoder -> mean of token states -> linear -> logit of 'offensive'."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert
        self.head = nn.Linear(bert.config.hidden_size, 1)

    def forward(self, input_ids, attention_mask):
        states = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.head(pooled).squeeze(-1)


# ------------------------------------------------------------------------------------ training

def pad_batch(seqs: list[np.ndarray], pad_id: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def predict_logits(model: OffenceClassifier, seqs: list[np.ndarray], device: str, batch_size: int = 128,
                   pad_id: int = 1) -> np.ndarray:
    model.eval()
    order = np.argsort([len(s) for s in seqs])  # similar lengths together: less padding
    out = np.zeros(len(seqs), dtype=np.float32)
    with torch.no_grad(), torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                                         enabled=device.startswith("cuda")):
        for start in range(0, len(seqs), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = pad_batch([seqs[i] for i in idx], pad_id)
            out[idx] = model(ids.to(device), mask.to(device)).float().cpu().numpy()
    return out


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    f1s = []
    for cls in (0, 1):
        tp = np.sum((pred == cls) & (y == cls))
        fp = np.sum((pred == cls) & (y != cls))
        fn = np.sum((pred != cls) & (y == cls))
        f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
    return float(np.mean(f1s))


def best_threshold(y: np.ndarray, prob: np.ndarray) -> tuple[float, float]:
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    scores = [macro_f1(y, (prob >= t).astype(int)) for t in grid]
    i = int(np.argmax(scores))
    return float(grid[i]), float(scores[i])


def train(model: OffenceClassifier, train_seqs: list[np.ndarray], train_y: np.ndarray,
          dev_seqs: list[np.ndarray], dev_y: np.ndarray, *, device: str, epochs: int = 3,
          lr: float = 5e-5, head_lr: float = 1e-3, batch_size: int = 32, seed: int = 0,
          pad_id: int = 1, log=print) -> dict:
    """Fine-tune the trainable parameters; keep the epoch with the best dev macro-F1.

    Returns {"epoch", "dev_macro_f1", "threshold", "dev_prob", "history", "state"} where state holds
    the trainable tensors of the best epoch (on CPU).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.to(device)
    head_params = list(model.head.parameters())
    body_params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    opt = torch.optim.AdamW([{"params": body_params, "lr": lr}, {"params": head_params, "lr": head_lr}],
                            weight_decay=0.01)
    steps = epochs * math.ceil(len(train_seqs) / batch_size)
    warmup = max(1, int(0.06 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    loss_fn = nn.BCEWithLogitsLoss()
    y_t = torch.tensor(train_y, dtype=torch.float32)
    best = {"dev_macro_f1": -1.0}
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.time()
        perm = rng.permutation(len(train_seqs))
        total = 0.0
        for start in range(0, len(perm), batch_size):
            idx = perm[start:start + batch_size]
            ids, mask = pad_batch([train_seqs[i] for i in idx], pad_id)
            with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                                enabled=device.startswith("cuda")):
                logits = model(ids.to(device), mask.to(device))
            loss = loss_fn(logits.float(), y_t[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(body_params + head_params, 1.0)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        prob = 1 / (1 + np.exp(-predict_logits(model, dev_seqs, device, pad_id=pad_id)))
        thr, f1 = best_threshold(dev_y, prob)
        at_half = macro_f1(dev_y, (prob >= 0.5).astype(int))
        history.append({"epoch": epoch, "train_loss": total / len(perm), "dev_macro_f1": f1,
                        "threshold": thr, "dev_macro_f1_at_0.5": at_half, "seconds": time.time() - t0})
        log(json.dumps(history[-1]))
        if f1 > best["dev_macro_f1"]:
            state = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
            best = {"epoch": epoch, "dev_macro_f1": f1, "threshold": thr, "dev_prob": prob, "state": state}
    best["history"] = history
    return best


def lora_deltas(state: dict[str, torch.Tensor], r: int, alpha: float) -> dict[str, torch.Tensor]:
    """{linear module name: B @ A * alpha/r} from a trained LoRA state (names as in the base model)."""
    out = {}
    for name, a in state.items():
        if name.endswith(".lora_a"):
            stem = name[: -len(".lora_a")]
            b = state[f"{stem}.lora_b"]
            out[stem.removeprefix("bert.")] = (b @ a) * (alpha / r)
    return out


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


# ----------------------------------------------------------------------------------- inference

class OffenceEncoder:
    """The shipped classifier: the rebuilt e5 model with its top layers replaced, and the head."""

    def __init__(self, model: OffenceClassifier, tokenizer, meta: dict, version: str):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.meta = meta
        self.version = version
        self.threshold = float(meta["threshold"])
        self.train_positive_rate = float(meta["train_positive_rate"])

    @classmethod
    def load(cls, model_dir: Path, e5_cache_dir: Path | None = None) -> OffenceEncoder:
        import hashlib

        from safetensors.torch import load_file
        from transformers import AutoTokenizer, BertModel

        from pipeline import e5_model

        meta = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
        if meta.get("base_model") != e5_model.MODEL_ID:
            raise ValueError(f"{model_dir}: trained on {meta.get('base_model')}, but this project builds "
                             f"{e5_model.MODEL_ID}; retrain with `python -m pipeline train-flags --encoder`")
        from transformers.utils import logging as hf_logging

        base_dir = e5_model.ensure_model(e5_cache_dir, progress=False)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # its load report lists the unused pooler: expected, not news
        hf_logging.disable_progress_bar()
        try:
            bert = BertModel.from_pretrained(str(base_dir), add_pooling_layer=False)
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
        model = OffenceClassifier(bert)
        weights_file = model_dir / meta["weights"]["file"]
        state = {k: v.float() for k, v in load_file(str(weights_file)).items()}
        if meta["kind"] == "lora":
            merge_lora(bert, lora_deltas(state, meta["lora_r"], meta["lora_alpha"]))
            missing = model.load_state_dict({k: v for k, v in state.items() if k.startswith("head.")}, strict=False)
        else:
            missing = model.load_state_dict(state, strict=False)
        if missing.unexpected_keys:
            raise ValueError(f"{weights_file}: unexpected tensors {missing.unexpected_keys[:3]}")
        tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
        version = hashlib.sha256(weights_file.read_bytes()).hexdigest()[:12]
        return cls(model, tokenizer, meta, version)

    def logits(self, texts_norm: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts_norm:
            return np.zeros(0, np.float32)
        ids = self.tokenizer([PREFIX + t for t in texts_norm], truncation=True, max_length=MAX_TOKENS)["input_ids"]
        seqs = [np.asarray(s, dtype=np.int64) for s in ids]
        return predict_logits(self.model, seqs, "cpu", batch_size=batch_size, pad_id=self.tokenizer.pad_token_id)

    def predict_proba(self, texts_norm: list[str]) -> np.ndarray:
        return 1 / (1 + np.exp(-self.logits(texts_norm)))


# ------------------------------------------------------------------------- `train-flags --encoder`

def own_split(row_id: str) -> str:
    """The project's own labelled sets are halved by id: even numbers train, odd ones stay held out."""
    return "train" if int(row_id[1:]) % 2 == 0 else "heldout"


def training_texts(cold_dir: Path, own_sets: list[Path]) -> tuple[list[str], list[int], list[tuple[str, int]], list[tuple[str, int]]]:
    """Normalised (COLD train texts, labels, COLD dev pairs without train texts, own training pairs).
    Plain csv, no polars: the GPU bundle script reads its data through this too."""
    import csv

    from pipeline.normalize import normalize_text

    def read_csv(path: Path) -> list[dict]:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return list(csv.DictReader(f))

    cold_train = read_csv(cold_dir / "train.csv")
    train_x = [normalize_text(r["TEXT"]) for r in cold_train]
    train_y = [int(r["label"]) for r in cold_train]
    seen = set(train_x)
    dev = [(normalize_text(r["TEXT"]), int(r["label"])) for r in read_csv(cold_dir / "dev.csv")]
    dev = [(t, y) for t, y in dev if t not in seen]  # COLD's dev repeats some train rows
    own = [(normalize_text(r["text"]), int(r["abusive"]) | int(r["hate"]))
           for path in own_sets for r in read_csv(path) if own_split(r["id"]) == "train"]
    return train_x, train_y, dev, own


def train_encoder(cold_dir: Path, own_sets: list[Path], out_dir: Path, *, device: str = "cpu",
                  epochs: int = 3, top_layers: int = 4, own_repeat: int = 6, limit: int = 0, seed: int = 0,
                  log=print) -> dict:
    """Fine-tune the top layers and head on COLD train plus the even half of the project's own sets
    (repeated `own_repeat` times), choose the epoch and threshold on COLD dev without train texts,
    and write `top_layers.safetensors` and `model.json` to `out_dir`. A GPU takes about 2 minutes;
    two CPU cores take hours (`limit` trains on that many rows only, for a smoke test)."""
    import hashlib

    from safetensors.torch import save_file
    from transformers import AutoTokenizer, BertModel

    from pipeline import e5_model
    from pipeline.fileio import replace_dir

    train_x, train_y, dev, own = training_texts(cold_dir, own_sets)
    if limit:
        train_x, train_y, dev = train_x[:limit], train_y[:limit], dev[:limit]
    texts = train_x + [t for t, _ in own] * own_repeat
    labels = np.array(train_y + [y for _, y in own] * own_repeat)

    base_dir = e5_model.ensure_model()
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))

    def encode(batch: list[str]) -> list[np.ndarray]:
        ids = tokenizer([PREFIX + t for t in batch], truncation=True, max_length=MAX_TOKENS)["input_ids"]
        return [np.asarray(s, dtype=np.int64) for s in ids]

    bert = BertModel.from_pretrained(str(base_dir), add_pooling_layer=False)
    freeze_except_top(bert, top_layers)
    model = OffenceClassifier(bert)
    dev_y = np.array([y for _, y in dev])
    best = train(model, encode(texts), labels, encode([t for t, _ in dev]), dev_y, device=device,
                 epochs=epochs, seed=seed, pad_id=tokenizer.pad_token_id, log=log)

    state = {k: (v.half() if not k.startswith("head.") else v).contiguous() for k, v in best["state"].items()}
    staging = out_dir.with_name(f".{out_dir.name}.tmp")
    staging.mkdir(parents=True, exist_ok=True)
    save_file(state, str(staging / "top_layers.safetensors"))
    meta = {
        "format_version": 1, "kind": "top", "top_layers": top_layers,
        "predicts": "probability that a comment is offensive (COLD label 1, or abusive/hate in the project's own sets)",
        "input": f"text normalised by pipeline.normalize.normalize_text, prefixed '{PREFIX}', at most {MAX_TOKENS} tokens",
        "base_model": e5_model.MODEL_ID,
        "threshold": best["threshold"], "train_positive_rate": float(np.mean(train_y)),
        "weights": {"file": "top_layers.safetensors",
                    "sha256": hashlib.sha256((staging / "top_layers.safetensors").read_bytes()).hexdigest(),
                    "holds": f"the top {top_layers} encoder layers (float16) and the linear head (float32)"},
        "training": {
            "data": {"cold": "thu-coai/COLDataset train.csv (Apache-2.0)",
                     "own": [f"{p.name} (even-numbered ids, x{own_repeat})" for p in own_sets]},
            "rows": {"cold": len(train_x), "own": len(own)},
            "selection": f"COLD dev.csv without rows whose text is in train ({len(dev)} rows): best epoch and threshold",
            "params": {"lr": 1e-4, "head_lr": 1e-3, "epochs": epochs, "best_epoch": best["epoch"], "batch_size": 32,
                       "seed": seed, "weight_decay": 0.01, "warmup": 0.06},
            "device": device, "history": best["history"],
            "command": f"python -m pipeline train-flags --encoder --device {device}",
        },
        "dev_macro_f1": best["dev_macro_f1"],
    }
    save_json(staging / "model.json", meta)
    replace_dir(staging, out_dir)
    return meta
