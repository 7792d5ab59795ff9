"""Kind "extra" offence encoder (new layers on the frozen e5) on CPU: package a GPU run, evaluate, time.

    # 1. models/offence_encoder_extra/ from a run of offence_encoder_gpu.py (threshold chosen on CPU)
    python benchmarks/offence_encoder_extra.py package --run .gpu/run_extra --variant extra1_own_lr3e4 \
        --cold ../shared/datasets/cold
    # 2. COLD dev without train texts: alone, and blended with the n-gram model (LR, 5-fold CV)
    python benchmarks/offence_encoder_extra.py evaluate --cold ../shared/datasets/cold [--top4-dev .gpu/dev_cpu.npz]
    # 3. logits_from_states against a full e5 encode of the same texts, 2 threads
    python benchmarks/offence_encoder_extra.py speed --cold ../shared/datasets/cold -n 2000

e5's token states are computed the way the embed stage computes them (sentence-transformers,
"query: " prompt, 256 tokens, batches of 64 sorted by length) and cached in --states-cache, so
`package` and `evaluate` pay for one e5 pass over COLD dev.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.models import offence_encoder as oe  # noqa: E402
from pipeline.config import OWN_LABELLED_SETS, PROJECT_ROOT  # noqa: E402
from offence_encoder_gpu import own_repeat  # noqa: E402  (this folder is on sys.path when run as a script)

OUT_DIR = PROJECT_ROOT / "models" / "offence_encoder_extra"
OWN_SETS = list(OWN_LABELLED_SETS)
BATCH = 64  # the embed stage's default batch size


def st_batches(st, texts: list[str], batch_size: int = BATCH):
    """(row indices, token_embeddings, attention_mask) per batch, as `SentenceTransformer.encode`
    makes them: texts sorted by length (longest first), "query: " prompt, the model's max length."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            features = st.preprocess([oe.PREFIX + texts[i] for i in idx])
            out = st(features)
            yield idx, out["token_embeddings"], out["attention_mask"]


def load_st():
    from pipeline.models import e5_model

    st = e5_model.load_sentence_transformer()
    st.max_seq_length = oe.EXTRA_MAX_TOKENS
    return st


def dev_states(cold: Path, cache: Path):
    """COLD dev without train texts, its labels, and its e5 batches (cached)."""
    _, _, dev, _ = oe.training_texts(cold, [])
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


def package(args) -> None:
    from safetensors.torch import load_file
    from transformers import BertConfig

    from pipeline.models import e5_model

    results = json.loads((args.run / "results.json").read_text())
    info = results[args.variant]
    if info["kind"] != "extra":
        raise SystemExit(f"{args.variant} is kind {info['kind']}, not 'extra'")
    state = load_file(str(args.run / f"{args.variant}.safetensors"))
    # What ships: the layers in float16. Choose the threshold with exactly those weights, on CPU.
    shipped = {k: (v.half().float() if k.startswith("layers.") else v.float()) for k, v in state.items()}
    model = oe.ExtraLayersClassifier(BertConfig.from_pretrained(str(e5_model.ensure_model())), info["size"])
    model.load_state_dict(shipped, strict=True)
    model.eval()
    texts, y, batches = dev_states(args.cold, args.states_cache)
    with torch.inference_mode():
        logits = logits_of(lambda s, m: model.forward_states(s.float(), m).numpy(), batches, len(texts))
    threshold, f1 = oe.best_threshold(y, 1 / (1 + np.exp(-logits)))
    bundle = np.load(args.bundle / "data.npz")
    source, labels = bundle["source"], bundle["labels"]
    train_labels = labels[source == 0]  # COLD train's rate, as models/offence_encoder/model.json states it
    _, _, dev, own = oe.training_texts(args.cold, OWN_SETS)
    others = {k: round(v["dev_macro_f1"], 4) for k, v in results.items() if "dev_macro_f1" in v}
    training = {
        "data": {"cold": "thu-coai/COLDataset train.csv (Apache-2.0)",
                 "own": [f"{p.name} (train rows, x{own_repeat(args.variant)})" for p in OWN_SETS]},
        "rows": {"cold": int(np.sum(source == 0)), "own": int(np.sum(source == 3))},
        "selection": f"COLD dev.csv without rows whose text is in train ({len(dev)} rows): best epoch on the GPU "
                     f"(bf16), threshold with the shipped float16 layers on CPU (float32)",
        "params": {"lr": info["lr"], "head_lr": 1e-3, "epochs": info["epochs"], "best_epoch": info["best_epoch"],
                   "batch_size": 32, "seed": 0, "weight_decay": 0.01, "warmup": 0.06},
        "device": f"{args.device}, bf16 autocast on e5's float32 states (computed once: "
                  f"{results['e5_states']['seconds']:.0f} s), training {info['seconds']:.0f} s "
                  f"(benchmarks/offence_encoder_gpu.py --variants {args.variant} on a bundle from "
                  f"benchmarks/offence_encoder_bundle.py --q4 --max-tokens 256)",
        "gpu_dev_macro_f1": info["dev_macro_f1"], "gpu_threshold": info["threshold"],
        "variants_compared_gpu_dev_macro_f1": others,
        "history": info["history"],
        "command": f"python benchmarks/offence_encoder_extra.py package --run {args.run} --variant {args.variant}",
    }
    assert len(own) == training["rows"]["own"], (len(own), training["rows"])
    meta = oe.write_extra_model(args.out, {"state": state, "threshold": threshold, "dev_macro_f1": f1},
                                extra_layers=info["size"], train_positive_rate=float(np.mean(train_labels)),
                                training=training)
    print(json.dumps({"out": str(args.out), "threshold": threshold, "dev_macro_f1_cpu": f1,
                      "dev_macro_f1_gpu": info["dev_macro_f1"], "sha256": meta["weights"]["sha256"]}))


def blend_cv(features: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> dict:
    """Logistic regression on the models' log-odds: weights fitted on all of dev, and the macro-F1
    (at p >= 0.5) of out-of-fold predictions."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    pred = np.zeros(len(y), int)
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, y):
        lr = LogisticRegression().fit(features[train_idx], y[train_idx])
        pred[test_idx] = lr.predict(features[test_idx])
    full = LogisticRegression().fit(features, y)
    return {"weights": [round(float(w), 3) for w in full.coef_[0]], "bias": round(float(full.intercept_[0]), 3),
            "cv_macro_f1": round(oe.macro_f1(y, pred), 4)}


def evaluate(args) -> None:
    from scipy.special import logit

    from pipeline.models.offence_ngram import OffenceModel

    enc = oe.OffenceEncoder.load(args.model)
    texts, y, batches = dev_states(args.cold, args.states_cache)
    extra = logits_of(enc.logits_from_states, batches, len(texts))
    ngram = OffenceModel.load(PROJECT_ROOT / "models" / "offence").decision_function(texts)
    p = 1 / (1 + np.exp(-extra))
    report = {
        "rows": len(texts),
        "extra_alone": {"threshold": enc.threshold, "macro_f1": round(oe.macro_f1(y, (p >= enc.threshold).astype(int)), 4),
                        "macro_f1_at_0.5": round(oe.macro_f1(y, (p >= 0.5).astype(int)), 4)},
        "ngram_alone_at_0.5": round(oe.macro_f1(y, (ngram >= 0).astype(int)), 4),
        "blend_extra_ngram": blend_cv(np.column_stack([extra, ngram]), y),
    }
    if args.top4_dev and args.top4_dev.exists():
        # The shipped top-4 encoder's CPU dev probabilities (and the n-gram model's), same rows
        ref = np.load(args.top4_dev)
        assert list(ref["x"]) == texts and np.array_equal(ref["y"], y), "top-4 dev file has other rows"
        top4 = logit(np.clip(ref["enc"].astype(np.float64), 1e-7, 1 - 1e-7))
        thr, f1 = oe.best_threshold(y, ref["enc"])
        report["top4_alone"] = {"best_threshold": thr, "macro_f1": round(f1, 4)}
        report["blend_top4_ngram"] = blend_cv(np.column_stack([top4, ngram]), y)
        report["blend_top4_extra_ngram"] = blend_cv(np.column_stack([top4, extra, ngram]), y)
    if args.gpu_probs and args.gpu_probs.exists():
        probs = np.load(args.gpu_probs)
        name = enc.meta["training"]["command"].split("--variant ")[-1]
        key = f"{name}_own_heldout"
        if key in probs:
            own_y = probs["own_heldout_y"]
            report["own_heldout_at_threshold"] = round(oe.macro_f1(own_y, (probs[key] >= enc.threshold).astype(int)), 4)
            f1_pos = _f1_pos(own_y, probs[key] >= enc.threshold)
            report["own_heldout_offensive_f1"] = round(f1_pos, 4)
    print(json.dumps(report, indent=1))


def _f1_pos(y: np.ndarray, pred: np.ndarray) -> float:
    tp = np.sum(pred & (y == 1))
    return float(2 * tp / max(1, 2 * tp + np.sum(pred & (y == 0)) + np.sum(~pred & (y == 1))))


def speed(args) -> None:
    torch.set_num_threads(args.threads)
    _, _, dev, _ = oe.training_texts(args.cold, [])
    texts = [t for t, _ in dev][: args.n]
    st = load_st()
    enc = oe.OffenceEncoder.load(args.model)
    batches = [(idx, s.clone(), m.clone()) for idx, s, m in st_batches(st, texts)]
    st.encode(texts[:64], prompt_name="query", batch_size=BATCH)  # warm-up
    runs = []
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        t0 = time.perf_counter()
        st.encode(texts, prompt_name="query", batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True)
        t_e5 = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _, states, mask in batches:
            enc.logits_from_states(states, mask)
        runs.append((t_e5, time.perf_counter() - t0))
    e5_s = min(r[0] for r in runs)
    extra_s = min(r[1] for r in runs)
    print(json.dumps({"texts": len(texts), "threads": args.threads, "e5_encode_s": round(e5_s, 2),
                      "logits_from_states_s": round(extra_s, 2), "ratio": round(extra_s / e5_s, 3),
                      "e5_per_s": round(len(texts) / e5_s, 1), "extra_per_s": round(len(texts) / extra_s, 1),
                      "runs": [[round(a, 2), round(b, 2)] for a, b in runs]}))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("package", "evaluate", "speed"):
        p = sub.add_parser(name)
        p.add_argument("--cold", type=Path, required=True)
        p.add_argument("--states-cache", type=Path, default=Path("/tmp/offence_extra_dev_states.pt"))
        p.add_argument("--model", type=Path, default=OUT_DIR)
        if name == "package":
            p.add_argument("--run", type=Path, required=True, help="offence_encoder_gpu.py's output folder")
            p.add_argument("--variant", required=True)
            p.add_argument("--bundle", type=Path, default=PROJECT_ROOT / ".gpu" / "bundle_q4")
            p.add_argument("--out", type=Path, default=OUT_DIR)
            p.add_argument("--device", default="NVIDIA H100", help="the GPU that trained it, for the record")
        if name == "evaluate":
            p.add_argument("--top4-dev", type=Path, default=PROJECT_ROOT / ".gpu" / "dev_cpu.npz")
            p.add_argument("--gpu-probs", type=Path, default=PROJECT_ROOT / ".gpu" / "run_extra" / "dev_probs.npz")
        if name == "speed":
            p.add_argument("-n", type=int, default=2000)
            p.add_argument("--threads", type=int, default=2)
            p.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    {"package": package, "evaluate": evaluate, "speed": speed}[args.cmd](args)


if __name__ == "__main__":
    main()
