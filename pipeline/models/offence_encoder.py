"""Offence classifier fine-tuned from the e5 encoder: LoRA adapters or re-trained top layers, and a head.

Why: character n-grams top out near 0.79 macro-F1 on COLD's test split; a fine-tuned encoder reads
context ("你真是个人才" is praise, "你真是个人才啊，这都能搞砸" is not). What ships is small: either the
LoRA matrices of every attention/FFN projection or the weights of the top `top_layers` layers, plus a
linear head over the mean-pooled tokens. The base weights come from the e5 model the project rebuilds
(pipeline.models.e5_model), so `models/offence_encoder/` holds only the difference.

Kind "extra" (`models/offence_encoder_extra/`) leaves all 12 e5 layers exactly as they are and adds
`extra_layers` new ones on top (initialised as copies of e5's last layer), then the same pooling and
head. Its input is e5's final token states, which the embed stage computes anyway, so scoring costs
only the new layers: `OffenceEncoder.logits_from_states(token_states, attention_mask)`.

This module needs torch, numpy and safetensors only (no polars), so training can run on a bare GPU
machine from a token bundle (see `benchmarks/offence_encoder_bundle.py`).
"""
from __future__ import annotations

import json
import math
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

PREFIX = "query: "  # the embed stage's e5 prompt: the classifier reads text the way the encoder was trained to
MAX_TOKENS = 128  # COLD comments are short; truncation at 128 tokens cuts under 1% of them
EXTRA_MAX_TOKENS = 256  # kind "extra" reads the embed stage's e5 states: its default `embed.max_seq_length`
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


class ExtraLayersClassifier(nn.Module):
    """Frozen e5 -> `n_extra` NEW encoder layers -> mean of token states -> linear -> logit (kind "extra").

    The 12 e5 layers stay exactly e5, so the embed stage's final token states (sentence-transformers'
    `token_embeddings`) can be fed to `forward_states` directly and the flag stage needs no second
    e5 pass. The new layers start as copies of e5's last layer. `self.bert` (the frozen e5) is only
    attached when the input is token ids (`forward`); it stays in eval mode, so no dropout touches it.
    """

    def __init__(self, config, n_extra: int, init_layer: nn.Module | None = None):
        super().__init__()
        import copy

        from transformers.models.bert.modeling_bert import BertLayer

        config = copy.deepcopy(config)
        if config._attn_implementation is None:
            config._attn_implementation = "sdpa"  # what BertModel.from_pretrained picks
        self.config = config
        self.layers = nn.ModuleList()
        for i in range(n_extra):
            layer = BertLayer(config, layer_idx=config.num_hidden_layers + i)
            if init_layer is not None:
                layer.load_state_dict(init_layer.state_dict())
            self.layers.append(layer)
        self.head = nn.Linear(config.hidden_size, 1)
        self.bert = None

    @classmethod
    def from_bert(cls, bert: nn.Module, n_extra: int) -> ExtraLayersClassifier:
        """For training: the new layers copy `bert`'s last layer, and `bert` is frozen and attached."""
        model = cls(bert.config, n_extra, init_layer=bert.encoder.layer[-1])
        model.attach_bert(bert)
        return model

    def attach_bert(self, bert: nn.Module) -> None:
        for p in bert.parameters():
            p.requires_grad = False
        self.bert = bert.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.bert is not None:
            self.bert.eval()  # frozen and exact: e5 without dropout, as at inference
        return self

    def attention_mask_4d(self, states: torch.Tensor, attention_mask: torch.Tensor):
        """The mask BertModel itself hands its layers (transformers 5: `create_bidirectional_mask`,
        in the format of the configured attention implementation: additive float for eager, bool or
        None for sdpa)."""
        try:
            from transformers.masking_utils import create_bidirectional_mask
        except ImportError:  # older transformers: the additive (B, 1, 1, L) mask that BertModel made then
            return (1.0 - attention_mask[:, None, None, :].to(states.dtype)) * torch.finfo(states.dtype).min
        return create_bidirectional_mask(self.config, states, attention_mask)

    def forward_states(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits from e5's last hidden states (B, L, H) and the 2-D attention mask (B, L)."""
        mask_4d = self.attention_mask_4d(states, attention_mask)
        for layer in self.layers:
            states = layer(states, mask_4d)
            if isinstance(states, tuple):  # transformers before 5 returned (hidden_states, ...)
                states = states[0]
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.head(pooled).squeeze(-1)

    def forward(self, input_ids, attention_mask):
        if self.bert is None:
            raise RuntimeError("ExtraLayersClassifier has no e5 attached: call attach_bert() or use forward_states()")
        with torch.no_grad():
            states = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.forward_states(states, attention_mask)


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
          pad_id: int = 1, also_choose_on: tuple[list[np.ndarray], np.ndarray] | None = None, log=print) -> dict:
    """Fine-tune the trainable parameters; keep the epoch with the best dev macro-F1 (at its best
    threshold). With `also_choose_on` (sequences, labels), e.g. the own sets' held-out rows, the epoch
    is the one with the best mean of the two macro-F1s, so that a second kind of data has a say.

    Returns {"epoch", "dev_macro_f1", "threshold", "dev_prob", "history", "state"} (and "also_prob"
    with `also_choose_on`) where state holds the trainable tensors of the best epoch (on CPU).
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
    best: dict = {}
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
        score, also_prob = f1, None
        if also_choose_on is not None:
            also_prob = 1 / (1 + np.exp(-predict_logits(model, also_choose_on[0], device, pad_id=pad_id)))
            history[-1]["also_macro_f1"] = best_threshold(also_choose_on[1], also_prob)[1]
            score = (f1 + history[-1]["also_macro_f1"]) / 2
        log(json.dumps(history[-1]))
        if score > best.get("score", -1.0):
            state = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
            best = {"epoch": epoch, "score": score, "dev_macro_f1": f1, "threshold": thr, "dev_prob": prob,
                    "also_prob": also_prob, "state": state}
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


# ------------------------------------------------- kind "extra": training on precomputed e5 states

def e5_states(bert: nn.Module, seqs: list[np.ndarray], device: str, batch_size: int = 256, pad_id: int = 1,
              dtype: torch.dtype = torch.float16) -> list[torch.Tensor]:
    """e5's last hidden states of each sequence, (len, hidden) in `dtype` on `device`. Computed in
    float32 (e5 is frozen, so once per text is enough for every epoch and every variant)."""
    bert.eval().to(device)
    order = np.argsort([len(s) for s in seqs])
    out: list[torch.Tensor | None] = [None] * len(seqs)
    with torch.no_grad():
        for start in range(0, len(seqs), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = pad_batch([seqs[i] for i in idx], pad_id)
            states = bert(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state.to(dtype)
            for row, i in enumerate(idx):
                out[i] = states[row, :len(seqs[i])].clone()
    return out


def pad_states(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, H) float32 states padded with zeros, and the (B, L) int64 attention mask."""
    lengths = torch.tensor([len(s) for s in states])
    padded = torch.nn.utils.rnn.pad_sequence(states, batch_first=True).float()
    mask = (torch.arange(padded.shape[1])[None, :] < lengths[:, None]).long().to(padded.device)
    return padded, mask


def predict_logits_from_states(model: ExtraLayersClassifier, states: list[torch.Tensor], device: str,
                               batch_size: int = 256) -> np.ndarray:
    model.eval()
    order = np.argsort([len(s) for s in states])
    out = np.zeros(len(states), dtype=np.float32)
    with torch.no_grad(), torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                                         enabled=device.startswith("cuda")):
        for start in range(0, len(states), batch_size):
            idx = order[start:start + batch_size]
            x, mask = pad_states([states[i].to(device) for i in idx])
            out[idx] = model.forward_states(x, mask).float().cpu().numpy()
    return out


def train_on_states(model: ExtraLayersClassifier, train_states: list[torch.Tensor], train_y: np.ndarray,
                    dev_states: list[torch.Tensor], dev_y: np.ndarray, *, device: str, epochs: int = 4,
                    lr: float = 2e-4, head_lr: float = 1e-3, batch_size: int = 32, seed: int = 0,
                    log=print) -> dict:
    """`train` for kind "extra": the same optimiser, schedule, loss, clipping and epoch/threshold
    choice, but the batches are e5 states (see `e5_states`), so e5 never runs during training.
    Returns the same dict as `train` (state: the new layers and the head, float32, on CPU)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.to(device)
    head_params = list(model.head.parameters())
    body_params = list(model.layers.parameters())
    opt = torch.optim.AdamW([{"params": body_params, "lr": lr}, {"params": head_params, "lr": head_lr}],
                            weight_decay=0.01)
    steps = epochs * math.ceil(len(train_states) / batch_size)
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
        perm = rng.permutation(len(train_states))
        total = 0.0
        for start in range(0, len(perm), batch_size):
            idx = perm[start:start + batch_size]
            x, mask = pad_states([train_states[i].to(device) for i in idx])
            with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                                enabled=device.startswith("cuda")):
                logits = model.forward_states(x, mask)
            loss = loss_fn(logits.float(), y_t[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(body_params + head_params, 1.0)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        prob = 1 / (1 + np.exp(-predict_logits_from_states(model, dev_states, device)))
        thr, f1 = best_threshold(dev_y, prob)
        at_half = macro_f1(dev_y, (prob >= 0.5).astype(int))
        history.append({"epoch": epoch, "train_loss": total / len(perm), "dev_macro_f1": f1,
                        "threshold": thr, "dev_macro_f1_at_0.5": at_half, "seconds": time.time() - t0})
        log(json.dumps(history[-1]))
        if f1 > best["dev_macro_f1"]:
            state = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()
                     if p.requires_grad}
            best = {"epoch": epoch, "dev_macro_f1": f1, "threshold": thr, "dev_prob": prob, "state": state}
    best["history"] = history
    return best


# ----------------------------------------------------------------------------------- inference

class OffenceEncoder:
    """The shipped classifier: the rebuilt e5 model with its top layers replaced, and the head
    (kinds "top" and "lora"); or, kind "extra", new layers and the head on top of the unchanged e5,
    which can score the embed stage's e5 token states (`logits_from_states`) without a second pass."""

    def __init__(self, model: OffenceClassifier | ExtraLayersClassifier, tokenizer, meta: dict, version: str,
                 base_dir: Path | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.meta = meta
        self.version = version
        self.threshold = float(meta["threshold"])
        self.train_positive_rate = float(meta["train_positive_rate"])
        self.max_tokens = int(meta.get("max_tokens", MAX_TOKENS))
        self._base_dir = base_dir  # kind "extra": where e5 and its tokenizer are, loaded on first `logits`

    @classmethod
    def load(cls, model_dir: Path, e5_cache_dir: Path | None = None) -> OffenceEncoder:
        import hashlib

        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        from pipeline.models import e5_model

        meta = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
        if meta.get("base_model") != e5_model.MODEL_ID:
            raise ValueError(f"{model_dir}: trained on {meta.get('base_model')}, but this project builds "
                             f"{e5_model.MODEL_ID}; retrain with `python -m pipeline train-flags --encoder`")
        base_dir = e5_model.ensure_model(e5_cache_dir, progress=False)
        if meta["kind"] == "extra":
            return cls._load_extra(model_dir, meta, base_dir)
        bert = _load_bert(base_dir)
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

    @classmethod
    def _load_extra(cls, model_dir: Path, meta: dict, base_dir: Path) -> OffenceEncoder:
        """Only the new layers and the head are loaded; e5 itself waits for the first `logits` call,
        since `logits_from_states` (the pipeline's path) never needs it."""
        import hashlib

        from safetensors.torch import load as load_bytes
        from transformers import BertConfig

        weights_file = model_dir / meta["weights"]["file"]
        raw = weights_file.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if digest != meta["weights"]["sha256"]:
            raise ValueError(f"{weights_file} does not match the sha256 in {model_dir / 'model.json'}")
        model = ExtraLayersClassifier(BertConfig.from_pretrained(str(base_dir)), int(meta["extra_layers"]))
        model.load_state_dict({k: v.float() for k, v in load_bytes(raw).items()}, strict=True)
        return cls(model, None, meta, digest[:12], base_dir=base_dir)

    def _ensure_e5(self) -> None:
        if self.meta["kind"] != "extra" or self.model.bert is not None:
            return
        from transformers import AutoTokenizer

        self.model.attach_bert(_load_bert(self._base_dir))
        self.tokenizer = AutoTokenizer.from_pretrained(str(self._base_dir))

    def logits(self, texts_norm: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts_norm:
            return np.zeros(0, np.float32)
        self._ensure_e5()
        ids = self.tokenizer([PREFIX + t for t in texts_norm], truncation=True, max_length=self.max_tokens)["input_ids"]
        seqs = [np.asarray(s, dtype=np.int64) for s in ids]
        return predict_logits(self.model, seqs, "cpu", batch_size=batch_size, pad_id=self.tokenizer.pad_token_id)

    def logits_from_states(self, token_states: torch.Tensor, attention_mask: torch.Tensor,
                           batch_size: int = 256) -> np.ndarray:
        """Float32 logits (one per row) from e5's final token states: `token_states` (B, L, 384), any
        float dtype and device, as sentence-transformers' `token_embeddings` of "query: " + text_norm
        (up to `max_tokens` = 256 tokens, the embed stage's default); `attention_mask` (B, L), 1 for real
        tokens, 0 for padding. Kind "extra" only: the other kinds change e5's own layers."""
        if self.meta["kind"] != "extra":
            raise ValueError(f"logits_from_states needs an offence encoder of kind 'extra' "
                             f"(models/offence_encoder_extra); this one is kind '{self.meta['kind']}', whose "
                             f"layers differ from e5's, so it must read the texts: use logits(texts_norm)")
        hidden = self.model.config.hidden_size
        if token_states.ndim != 3 or token_states.shape[-1] != hidden or tuple(attention_mask.shape) != tuple(token_states.shape[:2]):
            raise ValueError(f"expected token_states (B, L, {hidden}) and attention_mask (B, L), got "
                             f"{tuple(token_states.shape)} and {tuple(attention_mask.shape)}")
        out = np.zeros(token_states.shape[0], dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, token_states.shape[0], batch_size):
                mask = attention_mask[start:start + batch_size].to("cpu", torch.int64)
                used = torch.nonzero(mask.any(0))
                width = int(used[-1]) + 1 if len(used) else 1  # drop padding columns no row of this chunk uses
                states = token_states[start:start + batch_size, :width].to("cpu", torch.float32)
                out[start:start + len(mask)] = self.model.forward_states(states, mask[:, :width]).numpy()
        return out

    def predict_proba(self, texts_norm: list[str]) -> np.ndarray:
        return 1 / (1 + np.exp(-self.logits(texts_norm)))


@lru_cache(maxsize=4)
def load_shared(model_dir: Path, e5_cache_dir: Path | None = None) -> OffenceEncoder:
    """One OffenceEncoder per folder and process: the embed stage (scoring from e5's states) and
    the flag stage (its blend weights, its version) use the same loaded model."""
    return OffenceEncoder.load(model_dir, e5_cache_dir)


def _load_bert(base_dir: Path):
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report lists the unused pooler: expected, not news
    hf_logging.disable_progress_bar()
    try:
        return BertModel.from_pretrained(str(base_dir), add_pooling_layer=False)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


# ------------------------------------------------------------------------- `train-flags --encoder`

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
        raise ValueError(f"row id {row.get('id')!r}: without a split column (train / heldout / test) a labelled set "
                         f"is halved by id, which must be letters then a number, e.g. a012")
    return "train" if int(digits) % 2 == 0 else "heldout"


def training_texts(cold_dir: Path, own_sets: list[Path]) -> tuple[list[str], list[int], list[tuple[str, int]], list[tuple[str, int]]]:
    """Normalised (COLD train texts, labels, COLD dev pairs without train texts, own training pairs).
    Plain csv, no polars: the GPU bundle script reads its data through this too."""
    import csv

    from pipeline.text.normalize import normalize_text

    def read_csv(path: Path) -> list[dict]:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return list(csv.DictReader(f))

    cold_train = read_csv(cold_dir / "train.csv")
    train_x = [normalize_text(r["TEXT"]) for r in cold_train]
    train_y = [int(r["label"]) for r in cold_train]
    from pipeline.text.match_key import match_key

    seen = {match_key(t) for t in train_x}
    dev = [(normalize_text(r["TEXT"]), int(r["label"])) for r in read_csv(cold_dir / "dev.csv")]
    dev = [(t, y) for t, y in dev if match_key(t) not in seen]  # COLD's dev repeats train rows, some near-copies
    return train_x, train_y, dev, own_rows(own_sets, "train")


def stage_top_layers(out_dir: Path, trained: dict[str, torch.Tensor]) -> tuple[Path, str]:
    """Write trained top layers (float16) and head (float32) to a staging folder beside `out_dir`
    (moved into place by the caller with model.json); return the folder and the file's sha256."""
    import hashlib

    from safetensors.torch import save_file

    state = {k: (v.half() if not k.startswith("head.") else v).contiguous() for k, v in trained.items()}
    staging = out_dir.with_name(f".{out_dir.name}.tmp")
    staging.mkdir(parents=True, exist_ok=True)
    save_file(state, str(staging / "top_layers.safetensors"))
    return staging, hashlib.sha256((staging / "top_layers.safetensors").read_bytes()).hexdigest()


def train_encoder(cold_dir: Path, own_sets: list[Path], out_dir: Path, *, device: str = "cpu",
                  epochs: int = 3, top_layers: int = 4, own_repeat: int = 10, limit: int = 0, seed: int = 0,
                  log=print) -> dict:
    """Fine-tune the top layers and head on COLD train plus the own sets' training rows (repeated
    `own_repeat` times), choose the threshold on COLD dev without train texts and the epoch on it
    together with the own sets' held-out rows (see `train`),
    and write `top_layers.safetensors` and `model.json` to `out_dir`. A GPU takes about 2 minutes;
    two CPU cores take hours (`limit` trains on that many rows only, for a smoke test)."""
    from transformers import AutoTokenizer, BertModel

    from pipeline.models import e5_model
    from pipeline.io.fileio import replace_dir

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
    heldout = own_rows(own_sets, "heldout")
    also = (encode([t for t, _ in heldout]), np.array([y for _, y in heldout])) if heldout else None
    best = train(model, encode(texts), labels, encode([t for t, _ in dev]), dev_y, device=device,
                 epochs=epochs, seed=seed, pad_id=tokenizer.pad_token_id, also_choose_on=also, log=log)

    staging, digest = stage_top_layers(out_dir, best["state"])
    meta = {
        "format_version": 1, "kind": "top", "top_layers": top_layers,
        "predicts": "probability that a comment is offensive (COLD label 1, or abusive/hate in the project's own sets)",
        "input": f"text normalised by pipeline.text.normalize.normalize_text, prefixed '{PREFIX}', at most {MAX_TOKENS} tokens",
        "base_model": e5_model.MODEL_ID,
        "threshold": best["threshold"], "train_positive_rate": float(np.mean(train_y)),
        "weights": {"file": "top_layers.safetensors",
                    "sha256": digest,
                    "holds": f"the top {top_layers} encoder layers (float16) and the linear head (float32)"},
        "training": {
            "data": {"cold": "thu-coai/COLDataset train.csv (Apache-2.0)",
                     "own": [f"{p.name} (train rows, x{own_repeat})" for p in own_sets]},
            "rows": {"cold": len(train_x), "own": len(own)},
            "selection": f"COLD dev.csv without rows whose text is in train ({len(dev)} rows): threshold; epoch: "
                         + ("best mean macro-F1 of COLD dev and the own sets' held-out rows "
                            f"({len(heldout)})" if heldout else "best COLD dev macro-F1"),
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


def own_rows(own_sets: list[Path], part: str) -> list[tuple[str, int]]:
    """(normalised text, abusive or hate) of the own sets' rows in `part` (see `own_split`)."""
    import csv

    from pipeline.text.normalize import normalize_text

    rows = []
    for path in own_sets:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows += [(normalize_text(r["text"]), int(r["abusive"]) | int(r["hate"]))
                     for r in csv.DictReader(f) if own_split(r) == part]
    return rows


def adapt_encoder(model_dir: Path, cold_dir: Path, own_sets: list[Path], out_dir: Path, *, device: str = "cpu",
                  epochs: int = 3, own_repeat: int = 3, cold_replay: int = 3000, lr: float = 2e-5, seed: int = 0,
                  log=print) -> dict:
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
        raise ValueError(f"{', '.join(map(str, own_sets))}: adapting needs own rows to train on and held-out rows "
                         f"to choose the epoch (got {len(own)} and {len(heldout)}); see own_split")
    texts = [t for t, _ in own] * own_repeat + [train_x[i] for i in replay]
    labels = np.array([y for _, y in own] * own_repeat + [train_y[i] for i in replay])
    tokenizer, model = encoder.tokenizer, encoder.model
    freeze_except_top(model.bert, int(encoder.meta["top_layers"]))

    def encode(batch: list[str]) -> list[np.ndarray]:
        ids = tokenizer([PREFIX + t for t in batch], truncation=True, max_length=MAX_TOKENS)["input_ids"]
        return [np.asarray(s, dtype=np.int64) for s in ids]

    before = 1 / (1 + np.exp(-encoder.logits([t for t, _ in heldout])))
    heldout_y = np.array([y for _, y in heldout])
    best = train(model, encode(texts), labels, encode([t for t, _ in heldout]), heldout_y, device=device,
                 epochs=epochs, lr=lr, head_lr=lr * 5, seed=seed, pad_id=tokenizer.pad_token_id, log=log)
    staging, digest = stage_top_layers(out_dir, best["state"])
    meta = dict(encoder.meta)
    meta.pop("blend_with_ngram", None)  # fitted for the encoder before; refit by the caller
    meta["weights"] = dict(meta["weights"], sha256=digest)
    meta["threshold_own_heldout"] = best["threshold"]
    if "adaptation" in meta:  # adapting an adapted encoder: keep the record of each earlier step
        meta["earlier_adaptations"] = meta.get("earlier_adaptations", []) + [meta["adaptation"]]
    meta["adaptation"] = {
        "from": f"{model_dir.name} (weights sha256 {encoder.meta['weights']['sha256'][:12]})",
        "data": {"own": [f"{p.name} (train rows, x{own_repeat})" for p in own_sets],
                 "cold_replay": f"{len(replay)} rows of COLD train.csv sampled with seed {seed}"},
        "rows": {"own": len(own), "cold_replay": len(replay)},
        "selection": f"own sets' held-out rows ({len(heldout)}): best epoch; macro-F1 at the best threshold "
                     f"{best_threshold(heldout_y, before)[1]:.3f} before, {best['dev_macro_f1']:.3f} after",
        "params": {"lr": lr, "head_lr": lr * 5, "epochs": epochs, "best_epoch": best["epoch"], "batch_size": 32,
                   "seed": seed, "max_tokens": MAX_TOKENS},
        "device": f"{device}, {time.time() - t_start:.0f} s", "history": best["history"],
        "command": "python -m pipeline train-flags --adapt-encoder",
    }
    save_json(staging / "model.json", meta)
    replace_dir(staging, out_dir)
    return meta


# ------------------------------------------------------------------- kind "extra": files and training

EXTRA_WEIGHTS_FILE = "extra_layers.safetensors"


def write_extra_model(out_dir: Path, best: dict, *, extra_layers: int, train_positive_rate: float,
                      training: dict) -> dict:
    """Write `extra_layers.safetensors` (the new layers in float16, the head in float32) and
    `model.json` for kind "extra" into `out_dir`, replacing it whole. `best`: what `train_on_states`
    returns (state, threshold, dev_macro_f1)."""
    import hashlib

    from safetensors.torch import save_file

    from pipeline.models import e5_model
    from pipeline.io.fileio import replace_dir

    state = {k: (v.half() if k.startswith("layers.") else v.float()).contiguous() for k, v in best["state"].items()}
    if not state or not all(k.startswith(("layers.", "head.")) for k in state):
        raise ValueError(f"not the state of an ExtraLayersClassifier: {sorted(state)[:3]}")
    staging = out_dir.with_name(f".{out_dir.name}.tmp")
    staging.mkdir(parents=True, exist_ok=True)
    save_file(state, str(staging / EXTRA_WEIGHTS_FILE))
    meta = {
        "format_version": 1, "kind": "extra", "extra_layers": extra_layers,
        "predicts": "probability that a comment is offensive (COLD label 1, or abusive/hate in the project's own sets)",
        "input": f"e5's final token states (sentence-transformers 'token_embeddings') of '{PREFIX}' + text normalised "
                 f"by pipeline.text.normalize.normalize_text, at most {EXTRA_MAX_TOKENS} tokens, and their attention mask",
        "max_tokens": EXTRA_MAX_TOKENS,
        "base_model": e5_model.MODEL_ID,
        "threshold": best["threshold"], "train_positive_rate": float(train_positive_rate),
        "weights": {"file": EXTRA_WEIGHTS_FILE,
                    "sha256": hashlib.sha256((staging / EXTRA_WEIGHTS_FILE).read_bytes()).hexdigest(),
                    "holds": f"{extra_layers} new encoder layer(s) on top of the unchanged e5 (float16; initialised "
                             f"as copies of e5's last layer) and the linear head over their mean-pooled tokens (float32)"},
        "training": training,
        "dev_macro_f1": best["dev_macro_f1"],
    }
    save_json(staging / "model.json", meta)
    replace_dir(staging, out_dir)
    return meta


def train_extra_encoder(cold_dir: Path, own_sets: list[Path], out_dir: Path, *, device: str = "cpu",
                        epochs: int = 4, extra_layers: int = 1, lr: float = 2e-4, own_repeat: int = 6,
                        limit: int = 0, seed: int = 0, log=print) -> dict:
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
    ids = tokenizer([PREFIX + t for t in distinct], truncation=True, max_length=EXTRA_MAX_TOKENS)["input_ids"]
    states = e5_states(bert, [np.asarray(s, dtype=np.int64) for s in ids], device, pad_id=tokenizer.pad_token_id)
    n_train, n_own = len(train_x), len(own)
    own_states = states[n_train:n_train + n_own]
    train_states = states[:n_train] + own_states * own_repeat  # repeats share their tensors
    labels = np.array(train_y + [y for _, y in own] * own_repeat)
    dev_y = np.array([y for _, y in dev])
    model = ExtraLayersClassifier.from_bert(bert, extra_layers)
    best = train_on_states(model, train_states, labels, states[n_train + n_own:], dev_y, device=device,
                           epochs=epochs, lr=lr, seed=seed, log=log)
    training = {
        "data": {"cold": "thu-coai/COLDataset train.csv (Apache-2.0)",
                 "own": [f"{p.name} (even-numbered ids, x{own_repeat})" for p in own_sets]},
        "rows": {"cold": len(train_x), "own": n_own},
        "selection": f"COLD dev.csv without rows whose text is in train ({len(dev)} rows): best epoch and threshold",
        "params": {"lr": lr, "head_lr": 1e-3, "epochs": epochs, "best_epoch": best["epoch"], "batch_size": 32,
                   "seed": seed, "weight_decay": 0.01, "warmup": 0.06},
        "device": f"{device}, {time.time() - t_start:.0f} s", "history": best["history"],
        "command": "pipeline.models.offence_encoder.train_extra_encoder",
    }
    return write_extra_model(out_dir, best, extra_layers=extra_layers, train_positive_rate=float(np.mean(train_y)),
                             training=training)
