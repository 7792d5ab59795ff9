"""Fine-tune offence-encoder variants from a bundle (pipeline/training/gpu_bundle.py) on a GPU: how
the shipped models/offence_encoder/ and models/offence_encoder_extra/ were trained.

Writes, per variant, the trainable tensors of its best epoch and its dev probabilities, so the
variants can be compared (and blended with the n-gram model) on the CPU machine afterwards, and
installed there by pipeline/training/package_encoder.py. From the repository root:

    python -m pipeline.training.gpu_train --bundle .gpu/bundle --out $OUT [--variants lora16,top4]
    python -m pipeline.training.gpu_train --bundle .gpu/bundle_q4 --out $OUT --variants extra1_own,extra2_own

Kind "extra" variants (new layers on top of the frozen, exact e5) need a `--q4` bundle for exact e5
states; e5 runs once per text (float32), and only the new layers and the head train on its states.

The GPU machine has torch, transformers and safetensors but not the project's other dependencies:
this script and what it imports (pipeline.models.offence_encoder, pipeline.models.e5_format and
pipeline.training's offence_encoder, lora, metrics and offence_data) import nothing else at module
level. The training functions are the ones `python -m pipeline train-flags --encoder` runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, also when run as a file
from pipeline.metrics import best_threshold  # noqa: E402
from pipeline.models import offence_encoder as oe  # noqa: E402
from pipeline.training import offence_encoder as train_oe  # noqa: E402
from pipeline.training.lora import add_lora  # noqa: E402

VARIANTS = {
    # name: (kind, r/top/extra layers, lr, epochs, use_swsr); "_own" variants add the project's own sets,
    # repeated own_repeat(name) times
    "lora16": ("lora", 16, 5e-4, 4, False),
    "lora16_swsr": ("lora", 16, 5e-4, 4, True),
    "top4": ("top", 4, 1e-4, 4, False),
    "full": ("top", 12, 5e-5, 4, False),
    "lora32": ("lora", 32, 3e-4, 4, False),
    "top4_own": ("top", 4, 1e-4, 3, False),
    "extra1_own": ("extra", 1, 2e-4, 4, False),
    "extra2_own": ("extra", 2, 2e-4, 4, False),
    "extra1_own_lr1e4": ("extra", 1, 1e-4, 4, False),
    "extra1_own_lr3e4": ("extra", 1, 3e-4, 4, False),
    "top4_own10": ("top", 4, 1e-4, 3, False),
    "extra1_own10_lr3e4": ("extra", 1, 3e-4, 4, False),
}
OWN_REPEAT = {"top4_own10": 10, "extra1_own10_lr3e4": 10}  # how many times "_own" variants repeat the own training rows
ADAPT = {"own_repeat": 3, "cold_replay": 3000, "lr": 2e-5, "epochs": 2}  # as `train-flags --adapt-encoder`


def own_repeat(variant: str) -> int:
    return OWN_REPEAT.get(variant, 6)


def load_bundle(path: Path):
    data = np.load(path / "data.npz")
    ends = np.cumsum(data["lengths"])
    seqs = np.split(data["ids"].astype(np.int64), ends[:-1])
    return seqs, data["labels"].astype(np.int64), data["source"], json.loads((path / "config.json").read_text())


def build(config: dict, weights: dict):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(**{k: v for k, v in config.items() if k in BertConfig().to_dict() or k == "vocab_size"})
    bert = BertModel(cfg, add_pooling_layer=False)
    weights = dequantize(weights)
    missing, unexpected = bert.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
    assert not [m for m in missing if "pooler" not in m], missing
    return bert


def dequantize(weights: dict) -> dict:
    """A `--q4` bundle's 4-bit blocks back to float32 with the e5 rebuild's own code (exact)."""
    from pipeline.models.e5_format import dequantize_q4_0

    out = {k: v for k, v in weights.items() if not k.endswith((".q4", ".q4shape"))}
    for name in [k[: -len(".q4")] for k in weights if k.endswith(".q4")]:
        rows, cols = weights[f"{name}.q4shape"].tolist()
        out[name] = torch.from_numpy(dequantize_q4_0(weights[f"{name}.q4"].numpy()).reshape(rows, cols))
    return out


def _record(kind, size, lr, epochs, use_swsr, model, train_idx, t0, best) -> dict:
    """What results.json keeps of one variant's run."""
    return {
        "kind": kind,
        "size": size,
        "lr": lr,
        "epochs": epochs,
        "swsr": use_swsr,
        "trainable": train_oe.count_trainable(model),
        "train_rows": int(len(train_idx)),
        "seconds": time.time() - t0,
        "best_epoch": best["epoch"],
        "dev_macro_f1": best["dev_macro_f1"],
        "threshold": best["threshold"],
        "history": best["history"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--limit", type=int, default=0, help="smoke test: this many train and dev rows")
    ap.add_argument("--epochs", type=int, default=0, help="override every variant's epochs")
    ap.add_argument("--time-budget", type=float, default=0, help="start no variant after this many seconds")
    ap.add_argument(
        "--adapt",
        action="store_true",
        help="after each 'top' variant, adapt it as `train-flags --adapt-encoder` does (own train rows x3 "
        "+ 3,000 COLD rows, lr 2e-5, epoch chosen on the own held-out rows) and save that too",
    )
    args = ap.parse_args()
    t_start = time.time()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    seqs, labels, source, config = load_bundle(args.bundle)
    weights = load_file(str(args.bundle / "weights.safetensors"))
    pad = config["pad_token_id"]
    dev_idx = np.where(source == 1)[0][: args.limit or None]
    dev_seqs, dev_y = [seqs[i] for i in dev_idx], labels[dev_idx]
    results = {}
    probs = {"dev_y": dev_y}
    own_idx = np.where(source == 4)[0][: args.limit or None]
    states = None  # kind "extra": e5's final states per row, computed once for every extra variant
    for name in args.variants.split(","):
        if args.time_budget and time.time() - t_start > args.time_budget:
            print(name, "skipped: time budget spent", flush=True)
            continue
        kind, size, lr, epochs, use_swsr = VARIANTS[name]
        train_idx = np.where((source == 0) | ((source == 2) & use_swsr))[0][: args.limit or None]
        if "_own" in name:
            train_idx = np.concatenate([train_idx] + [np.where(source == 3)[0]] * own_repeat(name))
        epochs = args.epochs or epochs
        bert = build(config, weights)
        if kind == "extra":
            t0 = time.time()
            if states is None:
                need = np.unique(np.concatenate([train_idx, dev_idx, own_idx]))
                computed = oe.e5_states(bert, [seqs[i] for i in need], device, pad_id=pad)
                states = dict(zip(need.tolist(), computed))
                results["e5_states"] = {"rows": int(len(need)), "seconds": time.time() - t0}
                print("e5 states", json.dumps(results["e5_states"]), flush=True)
            model = oe.ExtraLayersClassifier.from_bert(bert, size)
            best = train_oe.train_on_states(
                model,
                [states[i] for i in train_idx],
                labels[train_idx],
                [states[i] for i in dev_idx],
                dev_y,
                device=device,
                epochs=epochs,
                lr=lr,
                seed=0,
                log=lambda s, n=name: print(n, s, flush=True),
            )
            results[name] = _record(kind, size, lr, epochs, use_swsr, model, train_idx, t0, best)
            probs[name] = best["dev_prob"]
            if len(own_idx):
                model.load_state_dict({k: v.to(device) for k, v in best["state"].items()}, strict=False)
                logits = oe.predict_logits_from_states(model, [states[i] for i in own_idx], device)
                probs[f"{name}_own_heldout"] = 1 / (1 + np.exp(-logits))
                probs["own_heldout_y"] = labels[own_idx]
            save_file({k: v.contiguous() for k, v in best["state"].items()}, str(args.out / f"{name}.safetensors"))
            print(name, json.dumps({k: v for k, v in results[name].items() if k != "history"}), flush=True)
            del model, bert
            torch.cuda.empty_cache()
            np.savez_compressed(args.out / "dev_probs.npz", **probs)  # after every variant: a cut-off run keeps them
            (args.out / "results.json").write_text(json.dumps(results, indent=1))
            continue
        if kind == "lora":
            for p in bert.parameters():
                p.requires_grad = False
            add_lora(bert, r=size, alpha=2 * size)
        else:
            train_oe.freeze_except_top(bert, size)
        model = oe.OffenceClassifier(bert)
        t0 = time.time()
        also = ([seqs[i] for i in own_idx], labels[own_idx]) if "_own" in name and len(own_idx) else None
        best = train_oe.train(
            model,
            [seqs[i] for i in train_idx],
            labels[train_idx],
            dev_seqs,
            dev_y,
            device=device,
            epochs=epochs,
            lr=lr,
            seed=0,
            pad_id=pad,
            also_choose_on=also,
            log=lambda s, n=name: print(n, s, flush=True),
        )
        results[name] = _record(kind, size, lr, epochs, use_swsr, model, train_idx, t0, best)
        probs[name] = best["dev_prob"]
        if len(own_idx):  # the held-out half of the project's own sets, with the best epoch's weights
            model.load_state_dict({k: v.to(device) for k, v in best["state"].items()}, strict=False)
            probs[f"{name}_own_heldout"] = 1 / (1 + np.exp(-oe.predict_logits(model, [seqs[i] for i in own_idx], device, pad_id=pad)))
            probs["own_heldout_y"] = labels[own_idx]
        if name != "full":  # the full model is a reference only: too big to ship
            state = {k: (v.half() if kind == "top" and not k.startswith("head.") else v).contiguous() for k, v in best["state"].items()}
            save_file(state, str(args.out / f"{name}.safetensors"))
        print(name, json.dumps({k: v for k, v in results[name].items() if k != "history"}), flush=True)
        if args.adapt and kind == "top" and len(own_idx):
            adapt(
                model, best, name, seqs, labels, source, dev_seqs, dev_y, own_idx, pad, device, args.out, results, probs, limit=args.limit
            )
        del model, bert
        torch.cuda.empty_cache()
        np.savez_compressed(args.out / "dev_probs.npz", **probs)  # after every variant: a cut-off run keeps them
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    np.savez_compressed(args.out / "dev_probs.npz", **probs)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


def adapt(
    model,
    best: dict,
    name: str,
    seqs,
    labels,
    source,
    dev_seqs,
    dev_y,
    own_idx,
    pad: int,
    device: str,
    out: Path,
    results: dict,
    probs: dict,
    limit: int = 0,
) -> None:
    """Continue from the variant's best epoch the way `train-flags --adapt-encoder` does, on the same
    rows (the bundle keeps COLD train in its order, so the seeded replay sample is the same)."""
    import random

    t0 = time.time()
    model.load_state_dict({k: v.to(device) for k, v in best["state"].items()}, strict=False)
    cold_train = np.where(source == 0)[0]
    replay = cold_train[random.Random(0).sample(range(len(cold_train)), min(ADAPT["cold_replay"], len(cold_train)))]
    idx = np.concatenate([np.where(source == 3)[0]] * ADAPT["own_repeat"] + [replay])
    if limit:  # smoke test
        idx = np.random.default_rng(0).permutation(idx)[:limit]
    adapted = train_oe.train(
        model,
        [seqs[i] for i in idx],
        labels[idx],
        [seqs[i] for i in own_idx],
        labels[own_idx],
        device=device,
        epochs=ADAPT["epochs"],
        lr=ADAPT["lr"],
        head_lr=ADAPT["lr"] * 5,
        seed=0,
        pad_id=pad,
        log=lambda s: print(f"{name}_adapt", s, flush=True),
    )
    model.load_state_dict({k: v.to(device) for k, v in adapted["state"].items()}, strict=False)
    dev_prob = 1 / (1 + np.exp(-oe.predict_logits(model, dev_seqs, device, pad_id=pad)))
    key = f"{name}_adapt"
    probs[key], probs[f"{key}_own_heldout"] = dev_prob, adapted["dev_prob"]
    results[key] = {
        "from": name,
        **ADAPT,
        "train_rows": int(len(idx)),
        "seconds": time.time() - t0,
        "best_epoch": adapted["epoch"],
        "own_heldout_macro_f1": adapted["dev_macro_f1"],
        "dev_macro_f1": best_threshold(dev_y, dev_prob)[1],
        "history": adapted["history"],
    }
    save_file(
        {k: (v.half() if not k.startswith("head.") else v).contiguous() for k, v in adapted["state"].items()},
        str(out / f"{key}.safetensors"),
    )
    print(key, json.dumps({k: v for k, v in results[key].items() if k != "history"}), flush=True)


if __name__ == "__main__":
    main()
