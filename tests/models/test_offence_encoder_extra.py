"""Kind "extra" offence encoder: new layers on top of the unchanged e5, fed the embed stage's token states."""

import copy

import numpy as np
import pytest
import torch

from pipeline.config import PROJECT_ROOT
from pipeline.models.offence_encoder import PREFIX, ExtraLayersClassifier, OffenceEncoder, pad_batch

MODEL_DIR = PROJECT_ROOT / "models" / "offence_encoder_extra"
TEXTS = ["你这个傻逼，滚出去", "今天天气不错，适合出去走走", "一群废物，看着就恶心", "谢谢楼主分享，学到了", "你真是个人才啊，这都能搞砸"]


@pytest.fixture(scope="module")
def encoder():
    return OffenceEncoder.load(MODEL_DIR)


@pytest.fixture(scope="module")
def st():
    from pipeline.models import e5_model

    model = e5_model.load_sentence_transformer()
    model.max_seq_length = 256  # the embed stage's default
    return model


def test_logits_from_embed_stage_states_equal_logits_of_texts(encoder, st):
    with torch.inference_mode():
        out = st(st.preprocess([PREFIX + t for t in TEXTS]))  # one padded batch, as the embed stage encodes
    from_states = encoder.logits_from_states(out["token_embeddings"], out["attention_mask"])
    from_texts = encoder.logits(TEXTS)
    assert from_states.dtype == np.float32 and from_states.shape == (len(TEXTS),)
    assert np.isfinite(from_states).all()
    assert np.allclose(from_states, from_texts, atol=1e-4), (from_states, from_texts)


def test_half_precision_states_and_chunks_give_the_same_logits(encoder, st):
    with torch.inference_mode():
        out = st(st.preprocess([PREFIX + t for t in TEXTS]))
    reference = encoder.logits_from_states(out["token_embeddings"], out["attention_mask"])
    chunked = encoder.logits_from_states(out["token_embeddings"], out["attention_mask"], batch_size=2)
    assert np.allclose(chunked, reference, atol=1e-5)
    half = encoder.logits_from_states(out["token_embeddings"].half(), out["attention_mask"])
    assert np.allclose(half, reference, atol=0.05)


def test_insults_score_above_ordinary_comments(encoder):
    p = encoder.predict_proba(TEXTS[:4])
    assert min(p[0], p[2]) > encoder.threshold > max(p[1], p[3]), p


def test_other_kinds_refuse_states():
    top = OffenceEncoder.__new__(OffenceEncoder)
    top.meta = {"kind": "top"}
    with pytest.raises(ValueError, match="kind 'extra'"):
        top.logits_from_states(torch.zeros(1, 3, 384), torch.ones(1, 3))


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_frozen_model_plus_new_layers_is_a_deeper_bert(impl):
    """e5 (here a small random BERT) followed by the new layers equals one BertModel with those
    layers appended, padding included, for both attention implementations."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    cfg._attn_implementation = impl
    bert = BertModel(cfg, add_pooling_layer=False).eval()
    model = ExtraLayersClassifier.from_bert(bert, 2).eval()
    with torch.no_grad():
        for p in model.layers.parameters():
            p.add_(0.05 * torch.randn_like(p))
    deep_cfg = copy.deepcopy(cfg)
    deep_cfg.num_hidden_layers = 4
    deep = BertModel(deep_cfg, add_pooling_layer=False).eval()
    state = dict(bert.state_dict())
    for i, layer in enumerate(model.layers):
        state.update({f"encoder.layer.{2 + i}.{k}": v for k, v in layer.state_dict().items()})
    deep.load_state_dict(state, strict=True)
    ids, mask = pad_batch([np.array([0, 5, 6, 7, 2]), np.array([0, 9, 2]), np.array([0, *range(10, 30), 2])])
    with torch.no_grad():
        expected = deep(input_ids=ids, attention_mask=mask).last_hidden_state
        states = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        mask_4d = model.attention_mask_4d(states, mask)
        for layer in model.layers:
            states = layer(states, mask_4d)
    valid = mask.bool()
    assert torch.allclose(states[valid], expected[valid], atol=1e-6)
