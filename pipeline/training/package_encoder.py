"""Install an offence-encoder variant trained by pipeline/training/gpu_train.py as a shipped model folder.

`top`: a top-layer variant as models/offence_encoder/. Copies `<variant>.safetensors` (the top layers
in float16 and the head, the format `train-flags --encoder` writes) and writes model.json with the
training record from the run's results.json. The blend with the n-gram model is refit afterwards
(`--refit`, or `pipeline.training.offence_blend.refit`).

`extra`: a kind "extra" variant as models/offence_encoder_extra/, its threshold chosen on CPU with
exactly the float16 layers that ship, on e5 token states computed the way the embed stage computes
them (sentence-transformers, "query: " prompt, 256 tokens, batches of 64 sorted by length) and
cached in --states-cache (benchmarks/offence_encoder_extra.py reads the same cache).

    python -m pipeline.training.package_encoder top --run /work/.device/1 --variant top4_own_adapt \
        --out models/offence_encoder --device "NVIDIA H100, bf16 autocast" --refit
    python -m pipeline.training.package_encoder extra --run .gpu/run_extra --variant extra1_own_lr3e4 \
        --cold ../shared/datasets/cold
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import OWN_LABELLED_SETS, PROJECT_ROOT
from pipeline.io.fileio import file_sha256, replace_dir
from pipeline.metrics import best_threshold
from pipeline.models import e5_model
from pipeline.models.offence_encoder import EXTRA_MAX_TOKENS, MAX_TOKENS, PREFIX, ExtraLayersClassifier, OffenceEncoder
from pipeline.training.gpu_train import own_repeat
from pipeline.training.offence_data import training_texts
from pipeline.training.offence_encoder import save_json
from pipeline.training.offence_encoder_extra import write_extra_model

OWN_SETS = list(OWN_LABELLED_SETS)
OWN_DIR = "pipeline/training/data"  # where OWN_SETS are, as the training records name them
GPU_TRAIN = "python -m pipeline.training.gpu_train"
GPU_BUNDLE = "python -m pipeline.training.gpu_bundle"
COLD = PROJECT_ROOT.parent / "shared" / "datasets" / "cold"
EXTRA_DIR = PROJECT_ROOT / "models" / "offence_encoder_extra"
BATCH = 64  # the embed stage's default batch size


def package_top(args) -> None:
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
    digest = file_sha256(weights)
    params = {
        "lr": base["lr"],
        "head_lr": 1e-3,
        "epochs": base["epochs"],
        "best_epoch": base["best_epoch"],
        "batch_size": 32,
        "seed": 0,
        "weight_decay": 0.01,
        "warmup": 0.06,
    }
    meta = {
        "format_version": 1,
        "kind": "top",
        "top_layers": base["size"],
        "predicts": "probability that a comment is offensive (COLD label 1, or abusive/hate in the project's own sets)",
        "input": f"text normalised by pipeline.text.normalize.normalize_text, prefixed '{PREFIX}', at most {MAX_TOKENS} tokens",
        "base_model": e5_model.MODEL_ID,
        "threshold": base["threshold"],
        "train_positive_rate": float(np.mean(cold_train_y)),
        "weights": {
            "file": "top_layers.safetensors",
            "sha256": digest,
            "holds": f"the top {base['size']} encoder layers (float16) and the linear head (float32)",
        },
        "training": {
            "data": {
                "cold": "thu-coai/COLDataset train.csv (Apache-2.0)",
                "own": [f"{OWN_DIR}/{p.name} (train rows, x{repeat})" for p in OWN_SETS],
            },
            "rows": {"all": base["train_rows"]},
            "selection": f"threshold: COLD dev.csv without rows whose text is in train ({len(cold_dev)} rows); epoch: "
            "best mean macro-F1 of COLD dev and the own sets' held-out rows",
            "params": params,
            "device": f"{args.device}, {base['seconds']:.0f} s",
            "history": base["history"],
            "command": f"{GPU_TRAIN} --variants {base_name}"
            + (" --adapt" if "from" in record else "")
            + f" on a {GPU_BUNDLE} --q4 --max-tokens 128 bundle "
            "(the training code of `python -m pipeline train-flags --encoder --device cuda`)",
        },
        "dev_macro_f1": base["dev_macro_f1"],
    }
    if "from" in record:
        meta["threshold_own_heldout"] = record["history"][record["best_epoch"] - 1]["threshold"]
        meta["adaptation"] = {
            "from": record["from"],
            "data": {
                "own": [f"{OWN_DIR}/{p.name} (train rows, x{record['own_repeat']})" for p in OWN_SETS],
                "cold_replay": f"{record['cold_replay']} rows of COLD train.csv sampled with seed 0",
            },
            "selection": f"own sets' held-out rows: best epoch (macro-F1 at the best threshold "
            f"{record['own_heldout_macro_f1']:.3f}); COLD dev macro-F1 after: {record['dev_macro_f1']:.3f}",
            "params": {
                "lr": record["lr"],
                "head_lr": record["lr"] * 5,
                "epochs": record["epochs"],
                "best_epoch": record["best_epoch"],
                "batch_size": 32,
                "seed": 0,
                "max_tokens": MAX_TOKENS,
            },
            "device": f"{args.device}, {record['seconds']:.0f} s",
            "history": record["history"],
            "command": "the same steps as python -m pipeline train-flags --adapt-encoder",
        }
    save_json(staging / "model.json", meta)
    replace_dir(staging, args.out)
    OffenceEncoder.load(args.out)  # the sha256 and the layers load
    print(json.dumps({"installed": str(args.out), "variant": args.variant, "sha256": digest[:12]}))
    if args.refit:
        from pipeline.training import offence_blend

        blend = offence_blend.refit(
            args.out, args.out.parent / "offence", args.cold, OWN_SETS, log=lambda s: print(s, file=sys.stderr, flush=True)
        )
        print(json.dumps({"blend": blend}))


# ---------------------------------------------------------------------- kind "extra": e5 states on CPU


def st_batches(st, texts: list[str], batch_size: int = BATCH):
    """(row indices, token_embeddings, attention_mask) per batch, as `SentenceTransformer.encode`
    makes them: texts sorted by length (longest first), "query: " prompt, the model's max length."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            features = st.preprocess([PREFIX + texts[i] for i in idx])
            out = st(features)
            yield idx, out["token_embeddings"], out["attention_mask"]


def load_st():
    st = e5_model.load_sentence_transformer()
    st.max_seq_length = EXTRA_MAX_TOKENS
    return st


def dev_states(cold: Path, cache: Path):
    """COLD dev without train texts, its labels, and its e5 batches (cached)."""
    _, _, dev, _ = training_texts(cold, [])
    texts, y = [t for t, _ in dev], np.array([y for _, y in dev])
    if cache.exists():
        batches = torch.load(cache)
    else:
        t0 = time.time()
        batches = [(torch.from_numpy(idx), s.clone(), m.clone()) for idx, s, m in st_batches(load_st(), texts)]
        torch.save(batches, cache)
        print(f"e5 states of {len(texts)} dev texts: {time.time() - t0:.0f} s", file=sys.stderr)
    return texts, y, batches


def logits_of(model_fn, batches, n: int) -> np.ndarray:
    out = np.zeros(n, np.float32)
    for idx, states, mask in batches:
        out[np.asarray(idx)] = model_fn(states, mask)
    return out


def package_extra(args) -> None:
    from safetensors.torch import load_file
    from transformers import BertConfig

    results = json.loads((args.run / "results.json").read_text())
    info = results[args.variant]
    if info["kind"] != "extra":
        raise SystemExit(f"{args.variant} is kind {info['kind']}, not 'extra'")
    state = load_file(str(args.run / f"{args.variant}.safetensors"))
    # What ships: the layers in float16. Choose the threshold with exactly those weights, on CPU.
    shipped = {k: (v.half().float() if k.startswith("layers.") else v.float()) for k, v in state.items()}
    model = ExtraLayersClassifier(BertConfig.from_pretrained(str(e5_model.ensure_model())), info["size"])
    model.load_state_dict(shipped, strict=True)
    model.eval()
    texts, y, batches = dev_states(args.cold, args.states_cache)
    with torch.inference_mode():
        logits = logits_of(lambda s, m: model.forward_states(s.float(), m).numpy(), batches, len(texts))
    threshold, f1 = best_threshold(y, 1 / (1 + np.exp(-logits)))
    bundle = np.load(args.bundle / "data.npz")
    source, labels = bundle["source"], bundle["labels"]
    train_labels = labels[source == 0]  # COLD train's rate, as models/offence_encoder/model.json states it
    _, _, dev, own = training_texts(args.cold, OWN_SETS)
    others = {k: round(v["dev_macro_f1"], 4) for k, v in results.items() if "dev_macro_f1" in v}
    training = {
        "data": {
            "cold": "thu-coai/COLDataset train.csv (Apache-2.0)",
            "own": [f"{p.name} (train rows, x{own_repeat(args.variant)})" for p in OWN_SETS],
        },
        "rows": {"cold": int(np.sum(source == 0)), "own": int(np.sum(source == 3))},
        "selection": f"COLD dev.csv without rows whose text is in train ({len(dev)} rows): best epoch on the GPU "
        f"(bf16), threshold with the shipped float16 layers on CPU (float32)",
        "params": {
            "lr": info["lr"],
            "head_lr": 1e-3,
            "epochs": info["epochs"],
            "best_epoch": info["best_epoch"],
            "batch_size": 32,
            "seed": 0,
            "weight_decay": 0.01,
            "warmup": 0.06,
        },
        "device": f"{args.device}, bf16 autocast on e5's float32 states (computed once: "
        f"{results['e5_states']['seconds']:.0f} s), training {info['seconds']:.0f} s "
        f"({GPU_TRAIN} --variants {args.variant} on a bundle from {GPU_BUNDLE} --q4 --max-tokens 256)",
        "gpu_dev_macro_f1": info["dev_macro_f1"],
        "gpu_threshold": info["threshold"],
        "variants_compared_gpu_dev_macro_f1": others,
        "history": info["history"],
        # benchmarks/offence_encoder_extra.py reads the variant's name back from the end of this line
        "command": f"python -m pipeline.training.package_encoder extra --run {args.run} --variant {args.variant}",
    }
    assert len(own) == training["rows"]["own"], (len(own), training["rows"])
    meta = write_extra_model(
        args.out,
        {"state": state, "threshold": threshold, "dev_macro_f1": f1},
        extra_layers=info["size"],
        train_positive_rate=float(np.mean(train_labels)),
        training=training,
    )
    print(
        json.dumps(
            {
                "out": str(args.out),
                "threshold": threshold,
                "dev_macro_f1_cpu": f1,
                "dev_macro_f1_gpu": info["dev_macro_f1"],
                "sha256": meta["weights"]["sha256"],
            }
        )
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="kind", required=True)
    top = sub.add_parser("top", help="a top-layer variant as models/offence_encoder")
    top.add_argument("--out", type=Path, required=True)
    top.add_argument("--device", default="GPU", help="what trained it, for the record")
    top.add_argument("--refit", action="store_true", help="refit the blend with the n-gram model (COLD dev + own held-out rows)")
    top.add_argument("--cold", type=Path, default=COLD)
    extra = sub.add_parser("extra", help="a kind 'extra' variant as models/offence_encoder_extra")
    extra.add_argument("--cold", type=Path, required=True)
    extra.add_argument("--states-cache", type=Path, default=Path("/tmp/offence_extra_dev_states.pt"))
    extra.add_argument("--bundle", type=Path, default=PROJECT_ROOT / ".gpu" / "bundle_q4")
    extra.add_argument("--out", type=Path, default=EXTRA_DIR)
    extra.add_argument("--device", default="NVIDIA H100", help="the GPU that trained it, for the record")
    for p in (top, extra):
        p.add_argument("--run", type=Path, required=True, help="gpu_train's output folder (results.json, <variant>.safetensors)")
        p.add_argument("--variant", required=True)
    args = ap.parse_args(argv)
    {"top": package_top, "extra": package_extra}[args.kind](args)


if __name__ == "__main__":
    main()
