"""How well the offence flags survive cloaking: COLD dev, original vs cloaked copies.

    python benchmarks/cloaking.py [--rows 1500] [--seed 0] [--base-rate 0.1] [--out /tmp/cloaking]
        [--cold ../shared/datasets/cold]

Takes COLD dev rows whose text is not in train (compared after normalize_text), samples `--rows`
of them keeping the label balance, and makes a cloaked copy of every offensive row the way people
dodge filters, one method per row chosen at random (seeded):

- homophone: 1-3 characters (inside insult/slur lexicon terms when the text has any, else any
  Chinese characters) replaced by a common character with the same toneless pinyin (傻逼 -> 傻比);
- split:     spaces, '*', '.' or zero-width characters between the characters of a lexicon term,
  or of a random 2-character span (傻*逼);
- latin:     known insults to pinyin initials or letter forms (傻逼 -> sb, 他妈的 -> tmd); rows
  without one get homophones instead and are recorded as homophone;
- emoji:     emoji or symbols inserted between characters (傻🔥逼).

Clean rows stay as they are. Writes OUT/original.jsonl and OUT/original_labels.csv, and the
cloaked set as OUT/cloaked.jsonl (comment_id, text) and OUT/labels.csv (comment_id, offensive,
method). Each set is scored by `python -m pipeline evaluate` (flag_abuse or flag_hate against
`offensive`); prints one JSON line per set with its macro-F1, precision and recall, and the
cloaked line adds, per method, recall on the offensive rows before and after cloaking (flags
from pipeline.report.evaluate.predictions run in this process on those rows).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import jieba
import numpy as np
import polars as pl
from pypinyin import Style, lazy_pinyin

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.config import load_config  # noqa: E402
from pipeline.report.evaluate import predictions  # noqa: E402
from pipeline.text.normalize import normalize_text  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
LEXICONS = [PROJECT / "models" / "lexicons" / "insults.txt", PROJECT / "models" / "lexicons" / "slurs.txt"]
METHODS = ["homophone", "split", "latin", "emoji"]
MIN_WORD_FREQ = 1000  # jieba dictionary words at least this frequent give the "common" characters
HOMOPHONE_CHOICES = 10  # a substitute is drawn from the most frequent characters with the reading
SEPARATORS = [" ", "*", ".", "\u200b", "\u200c", "\u200d", "\u2060"]
SYMBOLS = ["😀", "😂", "🤣", "👍", "💩", "🔥", "❤", "✨", "🐶", "★", "☆", "♥", "◆", "※", "~", "^"]
# Longest first, so that 你妈死了 wins over shorter terms inside it.
LATIN = [
    ("你妈死了", ["nmsl"]),
    ("草泥马", ["cnm"]),
    ("操你妈", ["cnm"]),
    ("他妈的", ["tmd", "TMD"]),
    ("傻逼", ["sb", "SB", "傻b", "煞b"]),
    ("傻比", ["sb"]),
    ("煞笔", ["sb"]),
    ("卧槽", ["wc", "woc"]),
    ("我操", ["wc"]),
    ("垃圾", ["lj", "laji"]),
    ("妈的", ["md"]),
    ("尼玛", ["nm"]),
    ("脑残", ["nc"]),
    ("神经病", ["sjb"]),
]


def is_han(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def reading(ch: str) -> str | None:
    r = lazy_pinyin(ch, style=Style.NORMAL)
    return r[0] if len(r) == 1 and r[0] != ch else None


def homophone_index() -> dict[str, list[str]]:
    """Toneless pinyin -> common simplified characters with that reading, most frequent first."""
    freq: dict[str, int] = defaultdict(int)
    with jieba.get_dict_file() as f:
        for line in f:
            parts = line.decode("utf-8").split()
            if len(parts) >= 2 and int(parts[1]) >= MIN_WORD_FREQ:
                for ch in parts[0]:
                    if is_han(ch):
                        freq[ch] += int(parts[1])
    index: dict[str, list[str]] = defaultdict(list)
    for ch in sorted(freq, key=lambda c: -freq[c]):
        r = reading(ch)
        if r and normalize_text(ch) == ch:  # simplified only: normalize_text would undo a traditional form
            index[r].append(ch)
    return dict(index)


def lexicon_terms() -> list[str]:
    terms = []
    for path in LEXICONS:
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if parts and not line.startswith("#") and any(is_han(c) for c in parts[0]):
                terms.append(parts[0])
    return sorted(set(terms), key=len, reverse=True)


def term_spans(text: str, terms: list[str]) -> list[tuple[int, int]]:
    """(start, end) of every lexicon term occurrence in the text."""
    spans = []
    for term in terms:
        start = text.find(term)
        while start >= 0:
            spans.append((start, start + len(term)))
            start = text.find(term, start + 1)
    return spans


def homophone(text: str, spans: list[tuple[int, int]], index: dict[str, list[str]], rng: random.Random) -> str | None:
    def substitutes(i: int) -> list[str]:
        r = reading(text[i]) if is_han(text[i]) else None
        return [c for c in index.get(r, [])[: HOMOPHONE_CHOICES + 1] if c != text[i]][:HOMOPHONE_CHOICES] if r else []

    in_terms = sorted({i for s, e in spans for i in range(s, e) if substitutes(i)})
    pool = in_terms or [i for i in range(len(text)) if substitutes(i)]
    if not pool:
        return None
    chars = list(text)
    for i in rng.sample(pool, min(rng.randint(1, 3), len(pool))):
        chars[i] = rng.choice(substitutes(i))
    return "".join(chars)


def random_span(text: str, rng: random.Random) -> tuple[int, int] | None:
    starts = [i for i in range(len(text) - 1) if is_han(text[i]) and is_han(text[i + 1])]
    starts = starts or list(range(len(text) - 1))
    if not starts:
        return None
    s = rng.choice(starts)
    return s, s + 2


def split(text: str, spans: list[tuple[int, int]], rng: random.Random) -> str | None:
    span = rng.choice(spans) if spans else random_span(text, rng)
    if span is None:
        return None
    s, e = span
    return text[:s] + rng.choice(SEPARATORS).join(text[s:e]) + text[e:]


def latin(text: str, rng: random.Random) -> str | None:
    for term, forms in LATIN:
        if term in text:
            return text.replace(term, rng.choice(forms))
    return None


def emoji(text: str, spans: list[tuple[int, int]], rng: random.Random) -> str | None:
    if spans:
        s, e = rng.choice(spans)
        gaps = list(range(s + 1, e))
    else:
        gaps = list(range(1, len(text)))
    if not gaps:
        return None
    chosen = set(rng.sample(gaps, min(rng.randint(1, 3), len(gaps))))
    return "".join((rng.choice(SYMBOLS) if i in chosen else "") + ch for i, ch in enumerate(text))


def cloak(text: str, terms: list[str], index: dict, rng: random.Random) -> tuple[str, str]:
    """(cloaked text, method applied). Falls back when the chosen method cannot change the text."""
    spans = term_spans(text, terms)
    method = rng.choice(METHODS)
    if method == "latin":
        out = latin(text, rng)
        if out is not None:
            return out, "latin"
        method = "homophone"
    if method == "homophone":
        out = homophone(text, spans, index, rng)
        if out is not None:
            return out, "homophone"
        method = "emoji"
    if method == "split":
        out = split(text, spans, rng)
        if out is not None:
            return out, "split"
    out = emoji(text, spans, rng)
    return (out, "emoji") if out is not None else (text + rng.choice(SYMBOLS), "emoji")


def sample_dev(cold: Path, rows: int, seed: int) -> pl.DataFrame:
    """COLD dev rows not in train, `rows` of them in the dev label balance; comment_id = dev row."""
    train = pl.read_csv(cold / "train.csv")
    dev = pl.read_csv(cold / "dev.csv").select("TEXT", "label").with_row_index("row")
    seen = {normalize_text(t) for t in train["TEXT"].to_list()}
    dev = dev.filter(pl.Series([normalize_text(t) not in seen for t in dev["TEXT"].to_list()]))
    rng = np.random.default_rng(seed)
    parts = []
    for label in (0, 1):
        group = dev.filter(pl.col("label") == label)
        n = min(group.height, round(rows * group.height / dev.height))
        parts.append(group[sorted(rng.choice(group.height, n, replace=False).tolist())])
    out = pl.concat(parts).sort("row")
    return out.select(pl.format("cold-dev-{}", "row").alias("comment_id"), pl.col("TEXT").alias("text"), pl.col("label").alias("offensive"))


def write_set(df: pl.DataFrame, jsonl: Path, labels: Path) -> None:
    with open(jsonl, "w", encoding="utf-8") as f:
        for cid, text in zip(df["comment_id"], df["text"]):
            f.write(json.dumps({"comment_id": cid, "text": text}, ensure_ascii=False) + "\n")
    df.drop("text").write_csv(labels)


def run_evaluate(jsonl: Path, labels: Path, overrides: list[str]) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "pipeline", "evaluate", "--input", str(jsonl), "--labels", str(labels)]
    for o in overrides:
        cmd += ["--set", o]
    started = time.time()
    proc = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"evaluate failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), round(time.time() - started, 1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cold", type=Path, default=PROJECT.parent / "shared" / "datasets" / "cold")
    p.add_argument("--rows", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base-rate", type=float, default=None, help="flag.offence_base_rate; none = the config default")
    p.add_argument("--out", type=Path, default=Path("/tmp/cloaking"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    overrides = [] if args.base_rate is None else [f"flag.offence_base_rate={args.base_rate}"]

    original = sample_dev(args.cold, args.rows, args.seed)
    terms, index, rng = lexicon_terms(), homophone_index(), random.Random(args.seed)
    texts, methods = [], []
    for text, offensive in zip(original["text"], original["offensive"]):
        new, method = cloak(text, terms, index, rng) if offensive == 1 else (text, "none")
        texts.append(new)
        methods.append(method)
    cloaked = original.with_columns(pl.Series("text", texts), pl.Series("method", methods))
    write_set(original, args.out / "original.jsonl", args.out / "original_labels.csv")
    write_set(cloaked, args.out / "cloaked.jsonl", args.out / "labels.csv")

    results = {}
    for name, jsonl, labels in [("original", "original.jsonl", "original_labels.csv"), ("cloaked", "cloaked.jsonl", "labels.csv")]:
        result, seconds = run_evaluate(args.out / jsonl, args.out / labels, overrides)
        r = result["offensive"]
        results[name] = {
            "set": name,
            "rows": r["n"],
            "offensive_rows": r["positives"],
            "base_rate": args.base_rate,
            "macro_f1": r["macro_f1"],
            "precision": r["precision"],
            "recall": r["recall"],
            "f1": r["f1"],
            "seconds": seconds,
        }

    # Per-method recall: per-row flags for the offensive rows only, before and after cloaking.
    cfg = load_config(None, overrides)
    offensive = cloaked.filter(pl.col("offensive") == 1)
    flags = {}
    for name, df in [("original", original.filter(pl.col("offensive") == 1)), ("cloaked", offensive)]:
        path = args.out / f"{name}_offensive.jsonl"
        write_set(df.select("comment_id", "text", "offensive"), path, args.out / f"{name}_offensive_labels.csv")
        pred = predictions([path], cfg)
        flags[name] = dict(zip(pred["comment_id"].to_list(), pred["flag_offensive"].to_list()))
    by_method = {}
    for method in METHODS:
        ids = offensive.filter(pl.col("method") == method)["comment_id"].to_list()
        before = sum(flags["original"][i] for i in ids)
        after = sum(flags["cloaked"][i] for i in ids)
        lost = sum(flags["original"][i] and not flags["cloaked"][i] for i in ids)
        by_method[method] = {
            "n": len(ids),
            "recall_original": round(before / len(ids), 4) if ids else None,
            "recall_cloaked": round(after / len(ids), 4) if ids else None,
            "flags_lost": lost,
        }
    results["cloaked"]["recall_by_method"] = by_method
    results["cloaked"]["macro_f1_drop"] = round(results["original"]["macro_f1"] - results["cloaked"]["macro_f1"], 4)
    for r in results.values():
        print(json.dumps(r, ensure_ascii=False))


if __name__ == "__main__":
    main()
