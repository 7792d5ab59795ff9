"""How much of the project's own sets the offence n-gram model should train on, measured on the
real dev split (benchmarks/data/weibo_ced_labels.csv, text joined from ../shared at run time) and on
COLD dev (near-copies of train rows dropped). The model's shape is the shipped one (char 1-2-grams,
min_df 2, C from models/offence/model.json); only the own rows' repeat changes.

    python benchmarks/offence_own_repeat.py [--repeats 0 1 3 5]

Prints one JSON line: per repeat, real dev ROC AUC and average precision (offensive = abusive or
hate), COLD dev macro-F1 at the best threshold, and training seconds. The real rows only measure:
nothing is fitted on them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from pipeline.config import OWN_LABELLED_SETS  # noqa: E402
from pipeline.normalize import normalize_text  # noqa: E402
from pipeline import offence_model as om  # noqa: E402
from pipeline.offence_encoder import own_rows  # noqa: E402
from real_flags import labelled  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", type=Path, default=ROOT.parent / "shared" / "datasets" / "cold")
    ap.add_argument("--repeats", type=int, nargs="+", default=[0, 1, 3, 5])
    args = ap.parse_args()
    params = json.loads((ROOT / "models" / "offence" / "model.json").read_text())["training"]["params"]
    ngram_range, C = tuple(params["ngram_range"]), params["C"]

    cold_x, cold_y = om._read_cold(args.cold / "train.csv")
    dev_x, dev_y = om._read_cold(args.cold / "dev.csv")
    dev_x, dev_y, _ = om._drop_seen(dev_x, dev_y, set(cold_x))
    own = own_rows(list(OWN_LABELLED_SETS), "train")
    own_x, own_y = [t for t, _ in own], np.array([y for _, y in own], dtype=np.int64)
    real = labelled(["dev"])
    real_x = [normalize_text(t) for t in real["text"].to_list()]
    real_y = ((real["abusive"] == 1) | (real["hate"] == 1)).to_numpy().astype(int)

    out = {"real_dev_rows": len(real_x), "real_dev_offensive": int(real_y.sum()), "cold_dev_rows": len(dev_x),
           "own_train_rows": len(own_x), "ngram_range": list(ngram_range), "C": C, "by_repeat": {}}
    for r in args.repeats:
        start = time.perf_counter()
        vec, clf = om.fit_sklearn(cold_x + own_x * r, np.concatenate([cold_y] + [own_y] * r), ngram_range, om.MIN_DF, C)
        seconds = time.perf_counter() - start
        p_real = clf.predict_proba(vec.transform(real_x))[:, 1]
        p_dev = clf.predict_proba(vec.transform(dev_x))[:, 1]
        t = om.best_threshold(dev_y, p_dev)
        out["by_repeat"][str(r)] = {"real_dev_auc": round(float(roc_auc_score(real_y, p_real)), 4),
                                    "real_dev_ap": round(float(average_precision_score(real_y, p_real)), 4),
                                    "cold_dev_macro_f1": round(om._macro_f1(dev_y, p_dev, t), 4),
                                    "seconds": round(seconds, 1)}
        print(f"repeat {r}: {out['by_repeat'][str(r)]}", file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
