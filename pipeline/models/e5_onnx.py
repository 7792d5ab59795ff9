"""e5 on ONNX Runtime with int8 weights: the default mode's encoder, built offline from the rebuilt
e5 model (pipeline/models/e5_model.py) and cached beside it.

Why: the encoder is the wall of a default run (a million comments is hours of e5 on 2 cores). The
build exports the fp32 BertModel to ONNX (eager attention, so ONNX Runtime's transformer optimizer
can fuse each layer's attention, GELU and layer norms), then quantises every weight matrix to int8
per output channel with dynamic int8 activations. Measured on 2,000 real Weibo comments on this
project's 2-core AVX2 machine (benchmarks/encode_speed.py --compare): see the README, "Running at
scale". Two choices in it were measured, not assumed:

- `reduce_range` (7-bit weights): without VNNI, int8 kernels add u8*s8 products in 16 bits, which
  saturate on 8-bit weights; 7 bits raised the minimum cosine to torch fp32 e5 from 0.984 to 0.991.
- One text per `run` call, texts spread over a pool of threads with one ONNX Runtime thread each:
  activations are quantised with one scale per call, so in a batch a text's vector would depend on
  its batch mates (and so on what the embedding cache already held). Alone, a text's vector is a
  function of the text; and on 2 cores this was as fast as padded batches of 16 on 2 threads.

    python -m pipeline.models.e5_onnx [--cache-dir DIR]    # build if needed, print the folder
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipeline.models import e5_model, model_cache

log = logging.getLogger("pipeline.models.e5_onnx")

# Bump whenever the build's output changes: it names the folder and the embedding cache's key.
BUILD_VERSION = 1
RUNTIME_ID = f"onnx-int8-v{BUILD_VERSION}"
MODEL_FILE = "model.onnx"
MARKER = "BUILT.json"


def model_dir(cache_dir: Path | None = None) -> Path:
    return e5_model.model_dir(cache_dir).with_name(f"{e5_model.model_dir(cache_dir).name}_{RUNTIME_ID}")


def is_complete(folder: Path) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        return (
            marker.get("runtime_id") == RUNTIME_ID
            and marker.get("e5_model_id") == e5_model.MODEL_ID
            and ((folder / MODEL_FILE).stat().st_size == marker["model_bytes"])
        )
    except (OSError, ValueError, KeyError, AttributeError):
        return False


def ensure_model(cache_dir: Path | None = None, progress: bool = True) -> Path:
    """The folder of the int8 ONNX model, building it (about a minute, once) if it is not there."""
    final = model_dir(cache_dir)
    source = e5_model.ensure_model(cache_dir, progress)
    level = logging.INFO if progress else logging.DEBUG

    def build(tmp: Path) -> None:
        log.log(level, "building the int8 ONNX e5 (%s) into %s (once; about a minute)", RUNTIME_ID, final)
        start = time.monotonic()
        convert(source, tmp)
        log.log(level, "built %s in %.0f s", final, time.monotonic() - start)

    model_cache.build_once(final, is_complete, build)
    return final


def convert(source: Path, out: Path) -> None:
    """fp32 export -> fused graph -> int8 weights, into the existing dir `out`, marker last."""
    import onnx
    import onnxruntime
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoModel

    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    bert = AutoModel.from_pretrained(source, attn_implementation="eager", local_files_only=True).eval()

    class LastHiddenState(torch.nn.Module):
        # transformers 5 takes keyword inputs only; the export passes positional ones.
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    fp32, fused = out / "fp32.onnx", out / "fused.onnx"
    ids = torch.tensor([[0, 1000, 2000, 3000, 2]])
    axes = {
        "input_ids": {0: "batch", 1: "tokens"},
        "attention_mask": {0: "batch", 1: "tokens"},
        "last_hidden_state": {0: "batch", 1: "tokens"},
    }
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it treats as constants
        torch.onnx.export(
            LastHiddenState(bert),
            (ids, torch.ones_like(ids)),
            str(fp32),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    optimize_model(
        str(fp32), model_type="bert", num_heads=config["num_attention_heads"], hidden_size=config["hidden_size"], opt_level=1
    ).save_model_to_file(str(fused))
    fp32.unlink()
    quantize_dynamic(
        fused,
        out / MODEL_FILE,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # the fused ops' outputs carry no type
    )
    fused.unlink()
    for name in ("tokenizer.json", "tokenizer_config.json", "config_sentence_transformers.json"):
        (out / name).write_bytes((source / name).read_bytes())
    marker = {
        "runtime_id": RUNTIME_ID,
        "e5_model_id": e5_model.MODEL_ID,
        "model_bytes": (out / MODEL_FILE).stat().st_size,
        "built_with": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "torch": torch.__version__},
    }
    (out / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
    for p in [out, *out.iterdir()]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)


def resolve_threads(threads: int) -> int:
    """`embed.threads`; 0 = $OMP_NUM_THREADS where set (Ray sets it to an actor's CPUs), else the
    CPUs this process may use."""
    if threads:
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else len(os.sched_getaffinity(0))


class OnnxE5:
    """The int8 e5: `encode` gives unit-length float32 vectors, `encode_states` also each text's
    final token states (for the offence layer that reads them)."""

    def __init__(self, folder: Path, max_seq_length: int, threads: int):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # parallel over texts instead (module docstring)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.prompts = json.loads((folder / "config_sentence_transformers.json").read_text(encoding="utf-8"))["prompts"]
        self.max_seq_length, self.threads = max_seq_length, threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="e5-onnx") if threads > 1 else None

    def token_ids(self, texts: list[str], prompt_name: str) -> list[list[int]]:
        prompt = self.prompts[prompt_name]
        return self.tokenizer([(prompt + t).strip() for t in texts], truncation=True, max_length=self.max_seq_length)["input_ids"]

    def _states(self, ids: list[int]) -> np.ndarray:
        row = np.asarray([ids], dtype=np.int64)
        return self.session.run(None, {"input_ids": row, "attention_mask": np.ones_like(row)})[0][0]

    def encode_states(self, texts: list[str], prompt_name: str) -> tuple[np.ndarray, list[np.ndarray]]:
        ids = self.token_ids(texts, prompt_name)
        states = list(self._pool.map(self._states, ids)) if self._pool else [self._states(i) for i in ids]
        vectors = np.stack([s.mean(0) for s in states]) if states else np.empty((0, self.session.get_outputs()[0].shape[-1]), np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors.astype(np.float32), states

    def encode(self, texts: list[str], prompt_name: str) -> np.ndarray:
        return self.encode_states(texts, prompt_name)[0]


def load(cache_dir: Path | None, max_seq_length: int, threads: int, progress: bool = False) -> OnnxE5:
    return OnnxE5(ensure_model(cache_dir, progress), max_seq_length, resolve_threads(threads))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the int8 ONNX e5 folder; print its path.")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: $PIPELINE_CACHE_DIR or ~/.cache/comment-pipeline")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # the quantiser logs every tensor at INFO
    log.setLevel(logging.INFO)
    print(ensure_model(args.cache_dir))


if __name__ == "__main__":
    main()
