"""Install a top-layer variant trained by benchmarks/offence_encoder_gpu.py as models/offence_encoder.

Copies `<variant>.safetensors` (the top layers in float16 and the head, the format `train-flags
--encoder` writes) and writes model.json with the training record from the run's results.json. The
blend with the n-gram model is refit afterwards (`--refit`, or `pipeline.models.offence_blend.refit`).

    python benchmarks/offence_encoder_package.py --run /work/.device/1 --variant top4_own_adapt \
        --out models/offence_encoder --device "NVIDIA H100, bf16 autocast" --refit
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.models import e5_model  # noqa: E402
from pipeline.io.fileio import replace_dir  # noqa: E402
from pipeline.config import OWN_LABELLED_SETS as OWN_SETS  # noqa: E402
from pipeline.models.offence_encoder import MAX_TOKENS, PREFIX, OffenceEncoder, save_json, training_texts  # noqa: E402
from offence_encoder_gpu import own_repeat  # noqa: E402  (this folder is on sys.path when run as a script)

GPU_SCRIPT = "benchmarks/offence_encoder_gpu.py"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True, help="the GPU run's output folder (results.json, <variant>.safetensors)")
    ap.add_argument("--variant", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="GPU", help="what trained it, for the record")
    ap.add_argument("--refit", action="store_true", help="refit the blend with the n-gram model (COLD dev + own held-out rows)")
    ap.add_argument("--cold", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cold")
    args = ap.parse_args()

    results = json.loads((args.run / "results.json").read_text())
    record = results[args.variant]
    base_name = record.get("from", args.variant)
    base = results[base_name]
    repeat = own_repeat(base_name)
    _, cold_train_y, cold_dev, _ = training_texts(args.cold, [])
    weights = args.run / f"{args.variant}.safetensors"
    staging = args.out.with_name(f".{args.out.name}.tmp")
    staging.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, staging / "top_layers.safetensors")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    params = {"lr": base["lr"], "head_lr": 1e-3, "epochs": base["epochs"], "best_epoch": base["best_epoch"],
              "batch_size": 32, "seed": 0, "weight_decay": 0.01, "warmup": 0.06}
    meta = {
        "format_version": 1, "kind": "top", "top_layers": base["size"],
        "predicts": "probability that a comment is offensive (COLD label 1, or abusive/hate in the project's own sets)",
        "input": f"text normalised by pipeline.text.normalize.normalize_text, prefixed '{PREFIX}', at most {MAX_TOKENS} tokens",
        "base_model": e5_model.MODEL_ID,
        "threshold": base["threshold"], "train_positive_rate": float(np.mean(cold_train_y)),
        "weights": {"file": "top_layers.safetensors", "sha256": digest,
                    "holds": f"the top {base['size']} encoder layers (float16) and the linear head (float32)"},
        "training": {
            "data": {"cold": "thu-coai/COLDataset train.csv (Apache-2.0)",
                     "own": [f"tests/data/{p.name} (train rows, x{repeat})" for p in OWN_SETS]},
            "rows": {"all": base["train_rows"]},
            "selection": f"threshold: COLD dev.csv without rows whose text is in train ({len(cold_dev)} rows); epoch: "
                         "best mean macro-F1 of COLD dev and the own sets' held-out rows",
            "params": params, "device": f"{args.device}, {base['seconds']:.0f} s", "history": base["history"],
            "command": f"python {GPU_SCRIPT} --variants {base_name}"
                       + (" --adapt" if "from" in record else "")
                       + " on a benchmarks/offence_encoder_bundle.py --q4 --max-tokens 128 bundle "
                         "(the training code of `python -m pipeline train-flags --encoder --device cuda`)",
        },
        "dev_macro_f1": base["dev_macro_f1"],
    }
    if "from" in record:
        meta["threshold_own_heldout"] = record["history"][record["best_epoch"] - 1]["threshold"]
        meta["adaptation"] = {
            "from": record["from"],
            "data": {"own": [f"tests/data/{p.name} (train rows, x{record['own_repeat']})" for p in OWN_SETS],
                     "cold_replay": f"{record['cold_replay']} rows of COLD train.csv sampled with seed 0"},
            "selection": f"own sets' held-out rows: best epoch (macro-F1 at the best threshold "
                         f"{record['own_heldout_macro_f1']:.3f}); COLD dev macro-F1 after: {record['dev_macro_f1']:.3f}",
            "params": {"lr": record["lr"], "head_lr": record["lr"] * 5, "epochs": record["epochs"],
                       "best_epoch": record["best_epoch"], "batch_size": 32, "seed": 0, "max_tokens": MAX_TOKENS},
            "device": f"{args.device}, {record['seconds']:.0f} s", "history": record["history"],
            "command": "the same steps as python -m pipeline train-flags --adapt-encoder",
        }
    save_json(staging / "model.json", meta)
    replace_dir(staging, args.out)
    OffenceEncoder.load(args.out)  # the sha256 and the layers load
    print(json.dumps({"installed": str(args.out), "variant": args.variant, "sha256": digest[:12]}))
    if args.refit:
        from pipeline.models import offence_blend

        blend = offence_blend.refit(args.out, args.out.parent / "offence", args.cold, list(OWN_SETS),
                                    log=lambda s: print(s, file=sys.stderr, flush=True))
        print(json.dumps({"blend": blend}))


if __name__ == "__main__":
    main()
