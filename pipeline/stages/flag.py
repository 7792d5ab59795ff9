"""Flag: per category a score in [0,1], a flag at the configured threshold, and the evidence.

Categories (definitions also in README and models/README.md):
- abuse: insults, profanity or threats aimed at a person or at the reader.
- hate: demeaning or dehumanising content aimed at a group (region, ethnicity, nationality, gender,
  sexuality, religion, disability).
- conspiracy: claims that hidden actors secretly steer events, as opposed to criticism or reporting.

Scores combine independent signals by noisy-OR (1 - prod(1 - s)):
The offence model's probability is first recalibrated from its training prior (COLD: half
offensive) to `flag.offence_base_rate`, the share expected on the platform.
- abuse = insult-lexicon weights and offence-model probability (each halved when a group is named)
- hate  = slur-lexicon weights  (+)  insult weights and model probability (x 0.35 when no group is named)
- conspiracy = the weights of the conspiracy rules that match
Lexicons and rules match the dedup key (lower case, no spaces or punctuation) so "傻 逼" is "傻逼".
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl
from scipy.special import expit, logit

from pipeline.config import PROJECT_ROOT, FlagConfig
from pipeline.keywords import WORDLIKE
from pipeline.flag_rules import load_lexicon, load_rules, noisy_or
from pipeline.match_key import match_key
from pipeline.stage import Stage, StageContext

CATEGORIES = ("abuse", "hate", "conspiracy")
# How much offence evidence (insult terms, the model) counts toward each category, by whether the
# comment names a group: aimed at a group it is hate, otherwise abuse of a person.
OFFENCE_SHARE = {"abuse": {True: 0.5, False: 1.0}, "hate": {True: 1.0, False: 0.35}}


@lru_cache(maxsize=4)
def load_resources(models_dir: Path):
    from pipeline.offence_model import OffenceModel

    return {
        "offence": OffenceModel.load(models_dir / "offence"),
        "insults": load_lexicon(models_dir / "lexicons" / "insults.txt"),
        "slurs": load_lexicon(models_dir / "lexicons" / "slurs.txt"),
        "groups": load_lexicon(models_dir / "lexicons" / "group_targets.txt"),
        "conspiracy": load_rules(models_dir / "rules" / "conspiracy.yaml"),
    }


def offence_probabilities(model, texts_norm: list[str], base_rate: float) -> np.ndarray:
    """The model's probabilities moved from its training prior to the platform's base rate.

    COLD is half offensive; real comment streams are not. Bayes' rule for a changed prior
    (Saerens et al., 2002) adds logit(base_rate) - logit(training rate) to every log-odds.
    """
    shift = logit(base_rate) - logit(model.train_positive_rate)
    return expit(model.decision_function(texts_norm) + shift)


def score_texts(texts_norm: list[str], models_dir: Path, base_rate: float) -> list[dict]:
    """Scores and evidence for each text: {score_abuse, ..., evidence_abuse: [...], ...}."""
    res = load_resources(models_dir)
    probs = offence_probabilities(res["offence"], texts_norm, base_rate)
    out = []
    for text, p in zip(texts_norm, probs):
        key = match_key(text)
        # Punctuation-, emoji- or digit-only comments say nothing the model can judge ("？？？" is not
        # an insult), but its character n-grams would still score them.
        p = float(p) if WORDLIKE.search(key) else 0.0
        groups = [t for t, _ in res["groups"].matches(key)]
        insults = res["insults"].matches(key)
        slurs = res["slurs"].matches(key)
        rules = [(r, m.group(0)) for r in res["conspiracy"] if (m := r.pattern.search(key))]
        names_group = bool(groups or slurs)
        model_evidence = ""
        if p >= 0.3:
            terms = ", ".join(f"{t} +{w:.2f}" for t, w in res["offence"].top_terms(text, 3))
            model_evidence = f"model offence p={p:.2f}" + (f" ({terms})" if terms else "")
        # Insults and the model measure offence; whether it is abuse or hate depends on its target.
        offence = [w for _, w in insults] + [p]
        share = {c: OFFENCE_SHARE[c][names_group] for c in ("abuse", "hate")}
        insult_evidence = [f"insult '{t}'" for t, _ in insults]
        row = {
            "score_abuse": noisy_or([s * share["abuse"] for s in offence]),
            "score_hate": noisy_or([w for _, w in slurs] + [s * share["hate"] for s in offence]),
            "score_conspiracy": noisy_or([r.weight for r, _ in rules]),
            "evidence_abuse": insult_evidence + ([model_evidence] if model_evidence else []),
            "evidence_hate": [f"slur '{t}'" for t, _ in slurs] + [f"names group '{g}'" for g in groups]
                             + ((insult_evidence + ([model_evidence] if model_evidence else [])) if names_group else []),
            "evidence_conspiracy": [f"rule {r.name} '{span}'" for r, span in rules],
            "score_offence_model": p,
        }
        out.append(row)
    return out


def models_dir_of(cfg: FlagConfig) -> Path:
    return cfg.models_dir or PROJECT_ROOT / "models"


def run(table: pl.DataFrame, cfg: FlagConfig, ctx: StageContext) -> pl.DataFrame:
    # Score each distinct text once: copies of a comment get identical scores and evidence.
    distinct = table["text_norm"].unique(maintain_order=True).to_list()
    scored = pl.DataFrame(score_texts(distinct, models_dir_of(cfg), cfg.offence_base_rate), schema={
        **{f"score_{c}": pl.Float64 for c in CATEGORIES},
        **{f"evidence_{c}": pl.List(pl.String) for c in CATEGORIES},
        "score_offence_model": pl.Float64,
    }).with_columns(pl.Series("text_norm", distinct, dtype=pl.String))
    table = table.join(scored, on="text_norm", how="left", maintain_order="left")
    thresholds = {c: getattr(cfg, f"threshold_{c}") for c in CATEGORIES}
    table = table.with_columns(
        [(pl.col(f"score_{c}") >= thresholds[c]).alias(f"flag_{c}") for c in CATEGORIES])
    table = table.with_columns(pl.any_horizontal([f"flag_{c}" for c in CATEGORIES]).alias("needs_review"))
    res = load_resources(models_dir_of(cfg))
    ctx.facts.update(offence_model_version=res["offence"].version,
                     flagged={c: int(table[f"flag_{c}"].sum()) for c in CATEGORIES},
                     needs_review=int(table["needs_review"].sum()))
    return table


def resources_fingerprint(cfg: FlagConfig) -> str:
    """Retraining the model or editing a lexicon or rule must rerun the stage."""
    root = models_dir_of(cfg)
    files = [root / "offence" / "model.json", *sorted((root / "lexicons").glob("*.txt")),
             *sorted((root / "rules").glob("*.yaml"))]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


STAGE = Stage(name="flag", version="1", config_section="flag", requires=("text_norm",),
              code_modules=("pipeline.flag_rules", "pipeline.offence_model", "pipeline.match_key", "pipeline.keywords"),
              resources=resources_fingerprint,
              adds=tuple(f"score_{c}" for c in CATEGORIES) + tuple(f"flag_{c}" for c in CATEGORIES)
              + tuple(f"evidence_{c}" for c in CATEGORIES) + ("needs_review",), run=run)
