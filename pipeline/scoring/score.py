"""How a comment's category scores and evidence are made (the flag stage applies thresholds).

The offence probability blends two models by a logistic regression fitted on COLD dev (stored with
the encoder; `flag.offence_blend_*` override it): a fine-tuned encoder (`flag.offence_encoder`:
models/offence_encoder, or models/offence_encoder_extra whose logits the embed stage can compute in
its own pass) and character n-grams (models/offence). It is then recalibrated from the training prior (COLD: half offensive) to
`flag.offence_base_rate`, the share expected on the platform.
- abuse = insult- and contempt-lexicon weights, the abuse rules' weights (models/rules/abuse.yaml:
  offence in what is asserted, e.g. calling the subject a fraud) and the offence probability (each
  halved when a group is named)
- hate  = slur-lexicon weights  (+)  insult weights, abuse-rule weights and model probability (x 0.25 when no group is named)
- conspiracy = the weights of the conspiracy rules that match  (+)  `conspiracy_model_weight` x a
  logistic regression on the comment's e5 embedding, trained on the project's own labelled sets
  (models/conspiracy)  (+)  `conspiracy_ngram_weight` x a character 2-3-gram model trained on the
  same sets (models/conspiracy_ngram), recalibrated to `flag.conspiracy_ngram_prior`. The weights
  and the threshold were chosen on real comments (benchmarks/choose_conspiracy.py): one model
  alone cannot flag; a rule match, or both models sure, can.
Lexicons and rules match the dedup key (lower case, no spaces or punctuation) so "傻 逼" is "傻逼".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl
from scipy.special import expit, logit

from pipeline.config import PROJECT_ROOT, FlagConfig
from pipeline.scoring.rules import conspiracy_rules, load_lexicon, load_rules, noisy_or, rule_matches, rule_row
from pipeline.scoring.spam import spam_scores
from pipeline.text.keywords import WORDLIKE
from pipeline.text.match_key import match_key

CATEGORIES = ("abuse", "hate", "conspiracy", "spam")
# What can put a comment in the review queue, with its (score, flag, evidence) columns: each content
# category, and the campaigns stage's group-level flag. The export stage, the review page, the desk
# and sample-flags read this one table.
REVIEW_KINDS = {c: (f"score_{c}", f"flag_{c}", f"evidence_{c}") for c in CATEGORIES} | {
    "campaign": ("campaign_score", "flag_campaign", "evidence_campaign")
}
# How much offence evidence (insult terms, the model) counts toward each category, by whether the
# comment names a group: aimed at a group it is hate, otherwise abuse of a person.
OFFENCE_SHARE = {"abuse": {True: 0.5, False: 1.0}, "hate": {True: 1.0, False: 0.25}}


ENCODER_DIRS = {"top4": "offence_encoder", "extra": "offence_encoder_extra"}


def load_encoder(models_dir: Path, cache_dir: Path | None, which: str = "top4"):
    from pipeline.models.offence_encoder import load_shared

    return load_shared(models_dir / ENCODER_DIRS[which], cache_dir)


def blend_weights(cfg: FlagConfig, encoder) -> tuple[float, float, float]:
    """(encoder, n-gram, bias): the config's where set, else those fitted with the encoder."""
    fitted = encoder.meta["blend_with_ngram"]
    pick = lambda mine, key: fitted[key] if mine is None else mine  # noqa: E731
    return (pick(cfg.offence_blend_encoder, "encoder"), pick(cfg.offence_blend_ngram, "ngram"), pick(cfg.offence_blend_bias, "bias"))


@lru_cache(maxsize=4)
def load_resources(models_dir: Path):
    from pipeline.models.conspiracy_model import ConspiracyHead
    from pipeline.models.offence_ngram import OffenceModel

    return {
        "offence": OffenceModel.load(models_dir / "offence"),
        "conspiracy_head": ConspiracyHead.load(models_dir / "conspiracy"),
        # Same file format and class as the offence n-gram model, trained on the project's own sets.
        "conspiracy_ngram": OffenceModel.load(models_dir / "conspiracy_ngram"),
        # Insults and slurs are also found when written as homophones (傻币 for 傻逼).
        "insults": load_lexicon(models_dir / "lexicons" / "insults.txt", match_by_sound=True),
        "slurs": load_lexicon(models_dir / "lexicons" / "slurs.txt", match_by_sound=True),
        # Milder derision ("就会吹牛", "什么玩意"): ordinary words, so never matched by sound.
        "contempt": load_lexicon(models_dir / "lexicons" / "contempt.txt"),
        "groups": load_lexicon(models_dir / "lexicons" / "group_targets.txt"),
        # Offence in what is asserted ("说白了就是来圈钱的"), with the contexts that void it.
        "abuse_rules": load_rules(models_dir / "rules" / "abuse.yaml"),
    }


def offence_probabilities(
    texts_norm: list[str], cfg: FlagConfig, cache_dir: Path | None, encoder_logits: np.ndarray | None = None, X=None
) -> tuple[np.ndarray, dict]:
    """The blended offence probability, moved from its training prior to the platform's base rate,
    and each model's own probability (for the evidence).

    COLD is half offensive; real comment streams are not. Bayes' rule for a changed prior
    (Saerens et al., 2002) adds logit(base_rate) - logit(training rate) to every log-odds.
    """
    models_dir = models_dir_of(cfg)
    ngram = load_resources(models_dir)["offence"]
    parts = {"ngram": np.clip(ngram.predict_proba(texts_norm, X), 1e-6, 1 - 1e-6)}
    log_odds = logit(parts["ngram"])
    if cfg.offence_model != "ngram":
        # A cascade: the encoder costs as much as the embedding model, so with 'blend' it only
        # reads comments the n-gram model is unsure about (NaN = not run, shown as such).
        low, high = cfg.offence_encoder_band if cfg.offence_model == "blend" else (0.0, 1.0)
        run = np.flatnonzero((parts["ngram"] >= low) & (parts["ngram"] <= high))
        encoder = load_encoder(models_dir, cache_dir, cfg.offence_encoder)
        if encoder_logits is None:  # else computed from the embed stage's token states
            encoder_logits = np.full(len(texts_norm), np.nan, np.float32)
            encoder_logits[run] = encoder.logits([texts_norm[i] for i in run])
        parts["encoder"] = np.clip(expit(encoder_logits), 1e-6, 1 - 1e-6)
        if cfg.offence_model == "encoder":
            log_odds = logit(parts["encoder"])
        else:
            w_encoder, w_ngram, bias = blend_weights(cfg, encoder)
            log_odds[run] = w_encoder * logit(parts["encoder"][run]) + w_ngram * log_odds[run] + bias
    shift = logit(cfg.offence_base_rate) - logit(ngram.train_positive_rate)
    return expit(log_odds + shift), parts


def models_dir_of(cfg: FlagConfig) -> Path:
    return cfg.models_dir or PROJECT_ROOT / "models"


# Evidence lines are built only where a score reaches this: below it nobody reads them.
EVIDENCE_MIN_SCORE = 0.3


def score_texts(
    texts_norm: list[str],
    vectors: np.ndarray | None,
    cfg: FlagConfig,
    cache_dir: Path | None = None,
    encoder_logits: np.ndarray | None = None,
    example_vectors: np.ndarray | None = None,
) -> list[dict]:
    """Scores and evidence for each text: {score_abuse, ..., evidence_abuse: [...], ...}.

    Everything per text that can run over all texts at once does (the models, Aho-Corasick for the
    lexicons, polars regex for the rules); the loop below only assembles scores and evidence.
    `example_vectors`: the labelled conspiracy examples in the space of `vectors`, when that is
    not the e5 space the conspiracy head was trained in (the fast, static embedding model).
    """
    models_dir = models_dir_of(cfg)
    model_weight = cfg.conspiracy_model_weight
    res = load_resources(models_dir)
    keys = [match_key(t) for t in texts_norm]
    X_offence = res["offence"].tfidf(texts_norm) if texts_norm else None
    probs, parts = offence_probabilities(texts_norm, cfg, cache_dir, encoder_logits, X_offence)
    head = res["conspiracy_head"]
    same_space = example_vectors is None
    head_probs = head.predict_proba(vectors) if same_space and vectors is not None else np.zeros(len(texts_norm))
    ngram_c = res["conspiracy_ngram"]
    X_conspiracy = ngram_c.tfidf(keys) if keys else None
    ngram_c_probs = expit(
        logit(np.clip(ngram_c.predict_proba(keys, X_conspiracy), 1e-6, 1 - 1e-6))
        + logit(cfg.conspiracy_ngram_prior)
        - logit(ngram_c.train_positive_rate)
    )
    wordlike = [bool(WORDLIKE.search(k)) for k in keys]
    # Punctuation-, emoji- or digit-only comments say nothing the model can judge ("？？？" is not
    # an insult), but its character n-grams would still score them.
    probs = np.where(wordlike, probs, 0.0)
    rules = rule_matches(conspiracy_rules(models_dir), keys)
    abuse_hits = rule_matches(res["abuse_rules"], keys)
    lexicon_hits = {name: res[name].matches_many(keys) for name in ("groups", "insults", "contempt", "slurs")}
    explain = np.flatnonzero(probs >= EVIDENCE_MIN_SCORE)
    offence_terms = dict(zip(explain.tolist(), res["offence"].top_terms_many(texts_norm, 3, X_offence, explain)))
    spam = spam_scores(texts_norm, models_dir)
    explain_c = np.flatnonzero(ngram_c_probs >= EVIDENCE_MIN_SCORE)
    conspiracy_terms = dict(zip(explain_c.tolist(), ngram_c.top_terms_many(keys, 3, X_conspiracy, explain_c)))
    out = []
    for i in range(len(texts_norm)):
        p, hp, cp = float(probs[i]), float(head_probs[i]), float(ngram_c_probs[i])
        groups = [t for t, _ in lexicon_hits["groups"][i]]
        insults, contempt, slurs = (lexicon_hits[n][i] for n in ("insults", "contempt", "slurs"))
        rules_row = rule_row(rules[i])
        names_group = bool(groups or slurs)
        model_evidence = ""
        if i in offence_terms:
            terms = ", ".join(f"{t} +{w:.2f}" for t, w in offence_terms[i])
            each = ", ".join(f"{name} {float(v[i]):.2f}" for name, v in parts.items() if not np.isnan(v[i]))
            model_evidence = f"model offence p={p:.2f} ({each}" + (f"; n-grams {terms})" if terms else ")")
        # Insults and the model measure offence; whether it is abuse or hate depends on its target.
        offence = [w for _, w in insults] + [w for _, w in contempt] + [r.weight for r, _ in abuse_hits[i]] + [p]
        share = {c: OFFENCE_SHARE[c][names_group] for c in ("abuse", "hate")}
        offence_evidence = (
            [f"insult '{t}'" for t, _ in insults]
            + [f"contempt '{t}'" for t, _ in contempt]
            + [f"rule {r.name} '{span}'" for r, span in abuse_hits[i]]
        )
        row = {
            "score_abuse": noisy_or([s * share["abuse"] for s in offence]),
            "score_hate": noisy_or([w for _, w in slurs] + [s * share["hate"] for s in offence]),
            "score_conspiracy": noisy_or([rules_row["score_conspiracy"], model_weight * hp, cfg.conspiracy_ngram_weight * cp]),
            "evidence_abuse": offence_evidence + ([model_evidence] if model_evidence else []),
            "evidence_hate": [f"slur '{t}'" for t, _ in slurs]
            + [f"names group '{g}'" for g in groups]
            + ((offence_evidence + ([model_evidence] if model_evidence else [])) if names_group else []),
            "evidence_conspiracy": rules_row["evidence_conspiracy"]
            + (
                [f"n-gram conspiracy p={cp:.2f} (" + ", ".join(f"{t} +{w:.2f}" for t, w in conspiracy_terms[i]) + ")"]
                if i in conspiracy_terms
                else []
            ),
            "score_spam": spam[i][0],
            "evidence_spam": spam[i][1],
            "score_offence_model": p,
        }
        out.append(row)
    if vectors is not None:
        explain = [i for i, row in enumerate(out) if row["score_conspiracy"] >= EVIDENCE_MIN_SCORE]
        for i, line in zip(explain, nearest_example_evidence(vectors[explain], cfg, example_vectors)):
            out[i]["evidence_conspiracy"].append(line)
    # A term that occurs twice is one piece of evidence for a moderator: each line once, in order.
    for row in out:
        for c in CATEGORIES:
            row[f"evidence_{c}"] = list(dict.fromkeys(row[f"evidence_{c}"]))
    return out


def nearest_example_evidence(vectors: np.ndarray, cfg: FlagConfig, example_vectors: np.ndarray | None = None) -> list[str]:
    """Context for the moderator of a likely conspiracy claim, whether or not the head's score counts
    (conspiracy_model_weight): the nearest labelled conspiracy example and the head's probability."""
    head = load_resources(models_dir_of(cfg))["conspiracy_head"]
    nearest, sims = head.nearest(vectors, example_vectors)
    probs = head.predict_proba(vectors) if example_vectors is None else [None] * len(vectors)
    return [
        f"nearest labelled conspiracy example '{ex}' (cos {sim:.2f}" + (f"; embedding head p={p:.2f})" if p is not None else ")")
        for ex, sim, p in zip(nearest, sims, probs)
    ]


SCORE_SCHEMA = {
    **{f"score_{c}": pl.Float64 for c in CATEGORIES},
    **{f"evidence_{c}": pl.List(pl.String) for c in CATEGORIES},
    "score_offence_model": pl.Float64,
}
