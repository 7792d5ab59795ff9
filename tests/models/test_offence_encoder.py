"""The fine-tuned offence encoder: real shipped weights on the real rebuilt e5 model."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.config import PROJECT_ROOT
from pipeline.models.offence_encoder import OffenceEncoder, lora_deltas, merge_lora
from pipeline.training.lora import LoRALinear

MODEL_DIR = PROJECT_ROOT / "models" / "offence_encoder"


@pytest.fixture(scope="module")
def encoder():
    return OffenceEncoder.load(MODEL_DIR)


def test_insults_score_above_ordinary_comments(encoder):
    offensive = ["你这个傻逼，滚出去", "一群废物，看着就恶心", "你妈死了，别来烦我"]
    ordinary = ["今天天气不错，适合出去走走", "这款手机续航很好，推荐购买", "谢谢楼主分享，学到了"]
    p_off, p_ord = encoder.predict_proba(offensive), encoder.predict_proba(ordinary)
    assert p_off.min() > 0.5 > p_ord.max(), (p_off, p_ord)


def test_only_the_top_layers_differ_from_the_base_model(encoder):
    shipped = load_file(str(MODEL_DIR / "top_layers.safetensors"))
    top = encoder.meta["top_layers"]
    n_layers = encoder.model.bert.config.num_hidden_layers
    for name, tensor in shipped.items():
        if name.startswith("bert."):
            assert int(name.split(".")[3]) >= n_layers - top, name
            assert torch.equal(encoder.model.get_parameter(name).detach(), tensor.float())


def test_merged_lora_equals_the_adapter():
    torch.manual_seed(0)
    base = torch.nn.Linear(8, 6)
    lora = LoRALinear(base, r=2, alpha=4, dropout=0.0)
    torch.nn.init.normal_(lora.lora_b)
    x = torch.randn(3, 8)
    expected = lora(x).detach()
    holder = torch.nn.Module()
    holder.proj = torch.nn.Linear(8, 6)
    holder.proj.load_state_dict(base.state_dict())
    merge_lora(holder, lora_deltas({"bert.proj.lora_a": lora.lora_a.detach(), "bert.proj.lora_b": lora.lora_b.detach()}, 2, 4))
    assert np.allclose(holder.proj(x).detach().numpy(), expected.numpy(), atol=1e-5)
