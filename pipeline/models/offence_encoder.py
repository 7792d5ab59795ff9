"""Offence classifier fine-tuned from the e5 encoder, as the pipeline runs it: the model classes,
loading a shipped `models/offence_encoder*/` folder, and scoring. Training: pipeline/training/.

Why: character n-grams top out near 0.79 macro-F1 on COLD's test split; a fine-tuned encoder reads
context ("你真是个人才" is praise, "你真是个人才啊，这都能搞砸" is not). What ships is small: either the
LoRA matrices of every attention/FFN projection or the weights of the top `top_layers` layers, plus a
linear head over the mean-pooled tokens. The base weights come from the e5 model the project rebuilds
(pipeline.models.e5_model), so `models/offence_encoder/` holds only the difference.

Kind "extra" (`models/offence_encoder_extra/`) leaves all 12 e5 layers exactly as they are and adds
`extra_layers` new ones on top (initialised as copies of e5's last layer), then the same pooling and
head. Its input is e5's final token states, which the embed stage computes anyway, so scoring costs
only the new layers: `OffenceEncoder.logits_from_states(token_states, attention_mask)`.

This module needs torch, numpy and safetensors only at import (no polars; the rest is imported where
it is used), so training can run on a bare GPU machine from a token bundle
(pipeline/training/gpu_bundle.py, pipeline/training/gpu_train.py).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

PREFIX = "query: "  # the embed stage's e5 prompt: the classifier reads text the way the encoder was trained to
MAX_TOKENS = 128  # COLD comments are short; truncation at 128 tokens cuts under 1% of them
EXTRA_MAX_TOKENS = 256  # kind "extra" reads the embed stage's e5 states: its default `embed.max_seq_length`
EXTRA_WEIGHTS_FILE = "extra_layers.safetensors"


# ------------------------------------------------------------------------------------ the models


def lora_deltas(state: dict[str, torch.Tensor], r: int, alpha: float) -> dict[str, torch.Tensor]:
    """{linear module name: B @ A * alpha/r} from a trained LoRA state (names as in the base model)."""
    out = {}
    for name, a in state.items():
        if name.endswith(".lora_a"):
            stem = name[: -len(".lora_a")]
            b = state[f"{stem}.lora_b"]
            out[stem.removeprefix("bert.")] = (b @ a) * (alpha / r)
    return out


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


# ----------------------------------------------- batches and predictions (training uses them too)


def pad_batch(seqs: list[np.ndarray], pad_id: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def predict_logits(model: OffenceClassifier, seqs: list[np.ndarray], device: str, batch_size: int = 128, pad_id: int = 1) -> np.ndarray:
    model.eval()
    order = np.argsort([len(s) for s in seqs])  # similar lengths together: less padding
    out = np.zeros(len(seqs), dtype=np.float32)
    with torch.no_grad(), torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        for start in range(0, len(seqs), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = pad_batch([seqs[i] for i in idx], pad_id)
            out[idx] = model(ids.to(device), mask.to(device)).float().cpu().numpy()
    return out


def e5_states(
    bert: nn.Module, seqs: list[np.ndarray], device: str, batch_size: int = 256, pad_id: int = 1, dtype: torch.dtype = torch.float16
) -> list[torch.Tensor]:
    """e5's last hidden states of each sequence, (len, hidden) in `dtype` on `device`. Computed in
    float32 (e5 is frozen, so once per text is enough for every epoch and every variant)."""
    bert.eval().to(device)
    order = np.argsort([len(s) for s in seqs])
    out: list[torch.Tensor | None] = [None] * len(seqs)
    with torch.no_grad():
        for start in range(0, len(seqs), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = pad_batch([seqs[i] for i in idx], pad_id)
            states = bert(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state.to(dtype)
            for row, i in enumerate(idx):
                out[i] = states[row, : len(seqs[i])].clone()
    return out


def pad_states(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, H) float32 states padded with zeros, and the (B, L) int64 attention mask."""
    lengths = torch.tensor([len(s) for s in states])
    padded = torch.nn.utils.rnn.pad_sequence(states, batch_first=True).float()
    mask = (torch.arange(padded.shape[1])[None, :] < lengths[:, None]).long().to(padded.device)
    return padded, mask


def predict_logits_from_states(model: ExtraLayersClassifier, states: list[torch.Tensor], device: str, batch_size: int = 256) -> np.ndarray:
    model.eval()
    order = np.argsort([len(s) for s in states])
    out = np.zeros(len(states), dtype=np.float32)
    with torch.no_grad(), torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        for start in range(0, len(states), batch_size):
            idx = order[start : start + batch_size]
            x, mask = pad_states([states[i].to(device) for i in idx])
            out[idx] = model.forward_states(x, mask).float().cpu().numpy()
    return out


# ----------------------------------------------------------------------------- the shipped model


class OffenceEncoder:
    """The shipped classifier: the rebuilt e5 model with its top layers replaced, and the head
    (kinds "top" and "lora"); or, kind "extra", new layers and the head on top of the unchanged e5,
    which can score the embed stage's e5 token states (`logits_from_states`) without a second pass."""

    def __init__(self, model: OffenceClassifier | ExtraLayersClassifier, tokenizer, meta: dict, version: str, base_dir: Path | None = None):
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
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        from pipeline.io.fileio import file_sha256
        from pipeline.models import e5_model

        meta = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
        if meta.get("base_model") != e5_model.MODEL_ID:
            raise ValueError(
                f"{model_dir}: trained on {meta.get('base_model')}, but this project builds "
                f"{e5_model.MODEL_ID}; retrain with `python -m pipeline train-flags --encoder`"
            )
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
        version = file_sha256(weights_file)[:12]
        return cls(model, tokenizer, meta, version)

    @classmethod
    def _load_extra(cls, model_dir: Path, meta: dict, base_dir: Path) -> OffenceEncoder:
        """Only the new layers and the head are loaded; e5 itself waits for the first `logits` call,
        since `logits_from_states` (the pipeline's path) never needs it."""
        import hashlib

        from safetensors.torch import load as load_bytes
        from transformers import BertConfig

        weights_file = model_dir / meta["weights"]["file"]
        raw = weights_file.read_bytes()  # hashed and loaded from the same bytes: what was checked is what runs
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

    def logits_from_states(self, token_states: torch.Tensor, attention_mask: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Float32 logits (one per row) from e5's final token states: `token_states` (B, L, 384), any
        float dtype and device, as sentence-transformers' `token_embeddings` of "query: " + text_norm
        (up to `max_tokens` = 256 tokens, the embed stage's default); `attention_mask` (B, L), 1 for real
        tokens, 0 for padding. Kind "extra" only: the other kinds change e5's own layers."""
        if self.meta["kind"] != "extra":
            raise ValueError(
                f"logits_from_states needs an offence encoder of kind 'extra' "
                f"(models/offence_encoder_extra); this one is kind '{self.meta['kind']}', whose "
                f"layers differ from e5's, so it must read the texts: use logits(texts_norm)"
            )
        hidden = self.model.config.hidden_size
        if token_states.ndim != 3 or token_states.shape[-1] != hidden or tuple(attention_mask.shape) != tuple(token_states.shape[:2]):
            raise ValueError(
                f"expected token_states (B, L, {hidden}) and attention_mask (B, L), got "
                f"{tuple(token_states.shape)} and {tuple(attention_mask.shape)}"
            )
        out = np.zeros(token_states.shape[0], dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, token_states.shape[0], batch_size):
                mask = attention_mask[start : start + batch_size].to("cpu", torch.int64)
                used = torch.nonzero(mask.any(0))
                width = int(used[-1]) + 1 if len(used) else 1  # drop padding columns no row of this chunk uses
                states = token_states[start : start + batch_size, :width].to("cpu", torch.float32)
                out[start : start + len(mask)] = self.model.forward_states(states, mask[:, :width]).numpy()
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
