"""Pack what fine-tuning the offence encoder needs into one small folder for a bare GPU machine.

The GPU machines lent to this project have torch and transformers but not this project's other
dependencies, and carry at most 64 MiB. The bundle holds the e5 weights in float16 with the word
embeddings cut to the tokens that COLD and SWSR use (the encoder layers are whole and unchanged), and
the normalised texts already tokenised. Adapters trained on it apply unchanged to the full model.

    python benchmarks/offence_encoder_bundle.py --cold ../shared/datasets/cold --swsr ../shared/datasets/swsr --out .gpu/bundle
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import save_file

from pipeline import e5_model
from pipeline.normalize import normalize_text
from pipeline.offence_encoder import MAX_TOKENS, PREFIX, own_split, training_texts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", type=Path, required=True)
    ap.add_argument("--swsr", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--extra", type=Path, action="append", default=[],
                    help="the project's own labelled CSVs (id, text, abusive, hate): even-numbered ids train, odd ones are held out")
    args = ap.parse_args()

    train_x, train_y, dev, _ = training_texts(args.cold, [])
    swsr = pl.read_csv(args.swsr / "SexComment.csv", columns=["comment_text", "label"])
    sw_x = [normalize_text(t) for t in swsr["comment_text"].to_list()]
    texts = train_x + [t for t, _ in dev] + sw_x
    labels = train_y + [y for _, y in dev] + swsr["label"].to_list()
    source = [0] * len(train_x) + [1] * len(dev) + [2] * len(sw_x)  # 0 train 1 dev 2 swsr 3/4 own train/held out
    for path in args.extra:
        own = pl.read_csv(path)
        for row in own.iter_rows(named=True):
            texts.append(normalize_text(row["text"]))
            labels.append(int(row["abusive"] or row["hate"]))
            source.append(3 if own_split(row["id"]) == "train" else 4)
    labels, source = np.array(labels, np.int8), np.array(source, np.int8)

    st = e5_model.load_sentence_transformer(e5_model.default_cache_dir())
    tok = st.tokenizer
    enc = tok([PREFIX + t for t in texts], truncation=True, max_length=MAX_TOKENS)["input_ids"]
    used = np.unique(np.concatenate([np.array(e) for e in enc] + [np.array([tok.pad_token_id])]))
    remap = np.full(len(tok), -1, np.int64)
    remap[used] = np.arange(len(used))
    flat = np.concatenate([remap[np.array(e)] for e in enc]).astype(np.uint16)
    lengths = np.array([len(e) for e in enc], np.int32)

    bert = st[0].auto_model
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in bert.state_dict().items()}
    state["embeddings.word_embeddings.weight"] = state["embeddings.word_embeddings.weight"][torch.from_numpy(used)].contiguous()
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.out / "weights.safetensors"))
    np.savez_compressed(args.out / "data.npz", ids=flat, lengths=lengths, labels=labels, source=source)
    config = bert.config.to_dict()
    config["vocab_size"] = int(len(used))
    config["pad_token_id"] = int(remap[tok.pad_token_id])
    (args.out / "config.json").write_text(json.dumps(config, indent=1))
    print(json.dumps({"texts": len(texts), "train": len(train_x), "dev": len(dev), "swsr": len(sw_x), "own_train": int(np.sum(source == 3)), "own_heldout": int(np.sum(source == 4)),
                      "vocab_used": int(len(used)), "pad": int(remap[tok.pad_token_id]),
                      "truncated": int(np.sum(lengths >= MAX_TOKENS)), "mean_tokens": float(lengths.mean())}))


if __name__ == "__main__":
    main()
