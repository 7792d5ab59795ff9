"""The presets for large batches: quality (offence logits from the embedding pass) and fast (static
model distilled from e5, n-gram flags). Real models; the fast test distils the static model once
per machine (about 10 minutes on 2 cores) when it is not in the cache yet."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from conftest import PROJECT, stage_context
from pipeline.config import load_config
from pipeline.models import embedder
from pipeline.models.e5_model import default_cache_dir
from pipeline.runner import Runner
from pipeline.scoring import score as scoring
from pipeline.stages import embed, flag

SAMPLE = PROJECT / "samples" / "comments.jsonl"
TEXTS = [
    "你这个傻逼，滚出去",
    "今天天气不错，适合出去走走",
    "一群废物，看着就恶心",
    "谢谢楼主分享，学到了",
    "这都是他们安排好的，背后的资本在操纵",
    "今天天气不错，适合出去走走",
]


@pytest.mark.slow
@pytest.mark.parametrize("runtime, probability_tolerance", [("torch", 1e-4), ("onnx-int8", 0.05)])
def test_fused_pass_gives_the_plain_embeddings_and_the_encoders_logits(runtime, probability_tolerance):
    # The default config: one pass. On torch the logits are the encoder's own to rounding; on the
    # int8 runtime they come from states at cosine ~0.99 to torch's, so compare what a threshold
    # sees: the probability (far-negative logits differ by more than a unit and mean the same).
    cfg = load_config(None, [f"embed.runtime={runtime}"])
    assert cfg.embed.offence_from_states and cfg.flag.offence_encoder == "extra"
    ctx = stage_context(embed_config=cfg.embed)
    table = embed.run(pl.DataFrame({"text_norm": TEXTS}), cfg.embed, ctx)
    plain = embedder.encode(embedder.load_model(cfg.embed, ctx.cache_dir), TEXTS, cfg.embed)
    assert np.allclose(table["embedding"].to_numpy(), plain, atol=1e-6)
    expected = scoring.load_encoder(PROJECT / "models", ctx.cache_dir, "extra").logits(TEXTS)

    def sigmoid(x):
        return 1 / (1 + np.exp(-np.asarray(x, np.float64)))

    assert np.allclose(sigmoid(table["offence_logit"].to_numpy()), sigmoid(expected), atol=probability_tolerance)
    assert table["offence_logit"][1] == table["offence_logit"][5]  # copies share one computation

    scored = flag.run(table, cfg.flag, ctx)
    assert ctx.facts["offence_logits_from_embed"] is True
    assert scored["flag_abuse"][0] and not scored["flag_abuse"][1]


@pytest.mark.slow
def test_both_stages_read_the_offence_encoder_of_the_runs_models_dir(tmp_path):
    """flag.models_dir reaches the embed stage through the runner's context: its logits come from
    the same offence_encoder_extra the flag stage would load, and its fingerprint follows that file."""
    import json
    import shutil

    models = tmp_path / "models"
    shutil.copytree(PROJECT / "models", models)
    meta_path = models / "offence_encoder_extra" / "model.json"
    meta_path.write_text(json.dumps(dict(json.loads(meta_path.read_text(encoding="utf-8")), note="a copy")), encoding="utf-8")
    cfg = load_config(None, [f"flag.models_dir={models}", "flag.conspiracy_model_weight=0"])
    ours = stage_context(embed_config=cfg.embed, models_dir=models)
    default = stage_context(embed_config=cfg.embed)
    assert embed.STAGE.resources(cfg.embed, ours) != embed.STAGE.resources(cfg.embed, default)
    table = embed.run(pl.DataFrame({"text_norm": TEXTS[:4]}), cfg.embed, ours)
    scored = flag.run(table, cfg.flag, ours)
    assert ours.facts["offence_logits_from_embed"] is True
    assert scored["flag_abuse"][0] and not scored["flag_abuse"][1]


@pytest.mark.slow
def test_fast_mode_runs_every_stage_on_the_static_model(tmp_path):
    cfg = load_config(PROJECT / "configs" / "fast.yaml", ["run.progress=false"])
    manifest = Runner([SAMPLE], tmp_path / "out", cfg).run()
    embed_facts = next(s["facts"] for s in manifest["stages"] if s["name"] == "embed")
    assert embed_facts["embed_model"].startswith("static-")
    flag_facts = next(s["facts"] for s in manifest["stages"] if s["name"] == "flag")
    assert flag_facts["offence_model"] == "ngram" and flag_facts["offence_encoder_version"] is None
    comments = pl.read_parquet(tmp_path / "out" / "comments.parquet")
    assert comments.height == manifest["summary"]["kept"]
    # The nearest-example evidence is computed in the static model's space, not e5's.
    evidence = [e for row in comments.filter(pl.col("score_conspiracy") >= 0.3)["evidence_conspiracy"].to_list() for e in row]
    assert any(e.startswith("nearest labelled conspiracy example") and "embedding head" not in e for e in evidence)


def test_static_model_vectors_are_unit_length_and_deterministic():
    from pipeline.models import static_model

    model = static_model.load(default_cache_dir(), progress=False)
    a, b = model.encode(TEXTS), model.encode(list(reversed(TEXTS)))[::-1]
    assert a.dtype == np.float32 and a.shape == (len(TEXTS), static_model.STATIC_DIMS)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a, b)
    assert float(a[1] @ a[5]) == pytest.approx(1.0, abs=1e-6)
