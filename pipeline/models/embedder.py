"""The embedding model as a service: the stages that embed (embed, and flag for its labelled
examples in the fast mode) load it through here, once per process, and get the same vectors.

e5 (multilingual-e5-small, rebuilt offline by pipeline/models/e5_model.py) on ONNX Runtime with int8
weights (`embed.runtime` 'onnx-int8', pipeline/models/e5_onnx.py) or on torch in fp32 ('torch'), or
the static model distilled from it (pipeline/models/static_model.py); all give unit-length float32
vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import EmbedConfig

_MODELS: dict = {}
DIM = 384


def load_model(cfg: EmbedConfig, cache_dir, progress: bool = False):
    """The model is loaded once per process (it takes seconds) and reused by later calls."""
    from pipeline.models import e5_model

    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its "Loading weights" bar would land in scheduler logs
    if cfg.model == "static-e5":
        from pipeline.models import static_model

        return static_model.load(cache_dir, progress)
    key = (str(cache_dir), cfg.max_seq_length, cfg.runtime, cfg.threads)
    if cfg.runtime == "onnx-int8":
        if key not in _MODELS:
            from pipeline.models import e5_onnx

            _MODELS[key] = e5_onnx.load(cache_dir, cfg.max_seq_length, cfg.threads, progress)
        return _MODELS[key]
    if key not in _MODELS:
        model = e5_model.load_sentence_transformer(cache_dir)
        model.max_seq_length = cfg.max_seq_length
        _MODELS[key] = model
    return _MODELS[key]


def model_id(cfg: EmbedConfig) -> str:
    from pipeline.models import e5_model

    if cfg.model == "static-e5":
        from pipeline.models import static_model

        return static_model.MODEL_ID
    return f"{e5_model.MODEL_ID}/{cfg.prompt_name}/len{cfg.max_seq_length}"


def cache_id(cfg: EmbedConfig) -> str:
    """The embedding cache's key: the model and how its vectors were computed. The runtime and the
    padding change their last bits, not the space they are in (`model_id`, which models trained on
    them record)."""
    if cfg.model == "static-e5":
        return model_id(cfg)
    if cfg.runtime == "onnx-int8":
        from pipeline.models import e5_onnx

        return f"{model_id(cfg)}/{e5_onnx.RUNTIME_ID}"
    return f"{model_id(cfg)}/pad{PAD_MULTIPLE}"


def encode(model, texts: list[str], cfg: EmbedConfig) -> np.ndarray:
    """Unit-length float32 vectors of the texts (no cache)."""
    if cfg.model == "static-e5":
        return model.encode(texts)
    if cfg.runtime == "onnx-int8":
        return model.encode(texts, cfg.prompt_name) if texts else np.empty((0, DIM), np.float32)
    vectors = np.empty((len(texts), DIM), np.float32)
    for idx, _, out in _forward(model, texts, cfg):
        vectors[idx] = out["sentence_embedding"]
    return vectors


def encode_with_offence(model, offence, texts: list[str], cfg: EmbedConfig) -> tuple[np.ndarray, np.ndarray]:
    """The embeddings exactly as `encode` gives them, and the offence encoder's logits read from the
    same forward pass's final token states (one extra layer instead of a second e5 pass); the
    offence layer reads each padded batch as it comes."""
    if cfg.runtime == "onnx-int8":
        from pipeline.models.offence_encoder import pad_states

        if not texts:
            return np.empty((0, DIM), np.float32), np.empty(0, np.float32)
        import torch

        vectors, states = model.encode_states(texts, cfg.prompt_name)
        # The offence layer runs on torch in padded batches: texts of similar length together.
        logits = np.empty(len(texts), np.float32)
        order = np.argsort([len(s) for s in states], kind="stable")
        for start in range(0, len(order), OFFENCE_BATCH):
            idx = order[start : start + OFFENCE_BATCH]
            states_t, mask = pad_states([torch.from_numpy(states[i]) for i in idx])
            logits[idx] = offence.logits_from_states(states_t, mask)
        return vectors, logits
    vectors = np.empty((len(texts), DIM), np.float32)
    logits = np.empty(len(texts), np.float32)
    for idx, features, out in _forward(model, texts, cfg):
        vectors[idx] = out["sentence_embedding"]
        logits[idx] = offence.logits_from_states(out["token_embeddings"], features["attention_mask"])
    return vectors, logits


# A text is padded to a multiple of this many tokens of its own length, never to its batch's
# longest text: padding length changes the last bits of a vector (up to 7e-8 here), and those bits
# decided between 2 and 4 topics on the 36-comment sample. With it a text's vector does not depend
# on which texts share its batch, what the cache already held, or the executor.
PAD_MULTIPLE = 8
OFFENCE_BATCH = 64


def _forward(model, texts: list[str], cfg: EmbedConfig):
    """(row indices, features, outputs) per batch; batches hold texts of one padded length."""
    import torch

    prompt = model.prompts[cfg.prompt_name]
    tokenizer, limit = model.tokenizer, model.max_seq_length
    lengths = [len(ids) for ids in tokenizer([(prompt + t).strip() for t in texts], truncation=True, max_length=limit)["input_ids"]]
    padded = np.minimum(-(-np.array(lengths, dtype=np.int64) // PAD_MULTIPLE) * PAD_MULTIPLE, limit)
    order = np.argsort(-padded, kind="stable")
    model.eval()
    with torch.inference_mode():
        start = 0
        while start < len(order):
            width = padded[order[start]]
            stop = start
            while stop < len(order) and stop - start < cfg.batch_size and padded[order[stop]] == width:
                stop += 1
            idx = order[start:stop]
            features = tokenizer(
                [(prompt + texts[i]).strip() for i in idx],
                padding="max_length",
                truncation=True,
                max_length=int(width),
                return_tensors="pt",
            )
            out = model(dict(features))
            out["sentence_embedding"] = torch.nn.functional.normalize(out["sentence_embedding"], p=2, dim=1).numpy()
            yield idx, features, out
            start = stop


class Embedder:
    """The run's embedding model (`embed` config section), loaded on first use."""

    def __init__(self, cfg: EmbedConfig, cache_dir: Path | None, progress: bool = False):
        self.cfg, self.cache_dir, self.progress = cfg, cache_dir, progress

    @property
    def model_id(self) -> str:
        return model_id(self.cfg)

    def encode(self, texts: list[str]) -> np.ndarray:
        return encode(load_model(self.cfg, self.cache_dir, self.progress), texts, self.cfg)
