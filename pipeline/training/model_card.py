"""MODEL_CARD.md beside each shipped model, generated from the model's own metadata file.

The card is a reading of model.json (head.json for the conspiracy head): what the model predicts,
from what input, the data and its licence, how it was chosen, its dev numbers, and the one command
that rebuilds it. Training writes it at the end of a run; `python -m pipeline.training.model_card`
rewrites every card from the files in models/, and a test checks that each card on disk is what its
metadata gives, so a card cannot drift from the model it describes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import PROJECT_ROOT

CARD = "MODEL_CARD.md"
# The metadata file of each shipped model and the one command that rebuilds it from HEAD.
SHIPPED = {
    "offence": ("model.json", "python -m pipeline train-flags  (COLD in ../shared/datasets/cold; refits both encoders' blends)"),
    "offence_encoder": (
        "model.json",
        "python -m pipeline train-flags --encoder --device cuda, then python -m pipeline train-flags --adapt-encoder  (CPU)",
    ),
    "offence_encoder_extra": ("model.json", "python -m pipeline train-flags --extra-encoder --device cuda"),
    "conspiracy": ("head.json", "python -m pipeline train-flags --conspiracy-only"),
    "conspiracy_ngram": ("model.json", "python -m pipeline train-flags --conspiracy-only"),
}
LICENCES = (
    "COLD (thu-coai/COLDataset): Apache-2.0. SWSR: MIT. The project's own labelled sets "
    "(pipeline/training/data/, written by this project): this repository's licence. No Weibo "
    "benchmark text (no licence) trains any shipped weight."
)
TESTS = (
    "Numbers here are development numbers (chosen or cross-validated on the data named above). "
    "Real-comment dev and test numbers: models/README.md, 'Measured on real comments' "
    "(benchmarks/real_flags.py). COLD's test split, ToxiCN and ToxiCloakCN are checks run by others; "
    "they are never read here."
)
# Long lists and per-epoch logs that say nothing a reader needs.
SKIP = {"coef", "features", "history", "libraries", "weights", "examples"}


def render(name: str, meta: dict) -> str:
    lines = [f"# models/{name}", "", "Generated from its metadata by pipeline/training/model_card.py; do not edit.", ""]
    for key in ("kind", "predicts", "input", "base_model", "embed_model"):
        if key in meta:
            lines.append(f"- **{key}**: {_value(meta[key])}")
    lines += ["", "## Rebuild", "", f"    {SHIPPED[name][1]}", "", "## Licences", "", LICENCES, "", "## Record", ""]
    for key, value in meta.items():
        if key not in SKIP and key not in ("kind", "predicts", "input", "base_model", "embed_model", "format_version"):
            lines += _bullets(key, value, 0)
    lines += ["", "## Where test numbers come from", "", TESTS, ""]
    return "\n".join(lines)


def _bullets(key: str, value, depth: int) -> list[str]:
    pad = "  " * depth
    if isinstance(value, dict) and depth < 3:
        out = [f"{pad}- {key}:"]
        for k, v in value.items():
            if k not in SKIP:
                out += _bullets(str(k), v, depth + 1)
        return out
    return [f"{pad}- {key}: {_value(value)}"]


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 300 else text[:297] + "..."
    return str(value)


def card_for(model_dir: Path) -> str:
    meta_file, _ = SHIPPED[model_dir.name]
    return render(model_dir.name, json.loads((model_dir / meta_file).read_text(encoding="utf-8")))


def write_card(model_dir: Path) -> Path:
    path = model_dir / CARD
    path.write_text(card_for(model_dir), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="rewrite MODEL_CARD.md of every shipped model from its metadata")
    parser.add_argument("--models-dir", type=Path, default=PROJECT_ROOT / "models")
    args = parser.parse_args(argv)
    for name in SHIPPED:
        print(write_card(args.models_dir / name))


if __name__ == "__main__":
    main()
