"""How much of the project's own sets the offence n-gram model should train on, measured on the
real dev split (benchmarks/data/weibo_ced_labels.csv, text joined from ../shared at run time) and on
COLD dev (near-copies of train rows dropped). The model's shape is the shipped one (n-gram range and
C from models/offence/model.json, or --ngram-range / --C); only the own rows' repeat changes, and
the rows are those training uses (pipeline.training.offence_ngram.training_rows).

    python benchmarks/offence_own_repeat.py [--repeats 0 1 3 5] [--ngram-range 1 2 --C 8]

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

from sklearn.metrics import average_precision_score, roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from real_flags import labelled  # noqa: E402

from pipeline.config import OWN_LABELLED_SETS  # noqa: E402
from pipeline.metrics import macro_f1_at  # noqa: E402
from pipeline.text.normalize import normalize_text  # noqa: E402
from pipeline.training import offence_ngram as om  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", type=Path, default=ROOT.parent / "shared" / "datasets" / "cold")
    ap.add_argument("--repeats", type=int, nargs="+", default=[0, 1, 3, 5])
    ap.add_argument("--ngram-range", type=int, nargs=2, help="default: the shipped model's (models/offence/model.json)")
    ap.add_argument("--C", type=float, help="default: the shipped model's")
    args = ap.parse_args()
    params = json.loads((ROOT / "models" / "offence" / "model.json").read_text())["training"]["params"]
    ngram_range = tuple(args.ngram_range or params["ngram_range"])
    C = args.C or params["C"]

    real = labelled(["dev"])
    real_x = [normalize_text(t) for t in real["text"].to_list()]
    real_y = ((real["abusive"] == 1) | (real["hate"] == 1)).to_numpy().astype(int)

    out = {"real_dev_rows": len(real_x), "real_dev_offensive": int(real_y.sum()), "ngram_range": list(ngram_range), "C": C, "by_repeat": {}}
    for r in args.repeats:
        # The rows training would use at this repeat (pipeline.training.offence_ngram.training_rows).
        x, y, dev_x, dev_y, _, rows = om.training_rows(args.cold, list(OWN_LABELLED_SETS), r)
        out["cold_dev_rows"] = len(dev_x)
        if "own" in rows:
            out["own_train_rows"] = rows["own"]
        start = time.perf_counter()
        vec, clf = om.fit_sklearn(x, y, ngram_range, om.MIN_DF, C)
        seconds = time.perf_counter() - start
        p_real = clf.predict_proba(vec.transform(real_x))[:, 1]
        p_dev = clf.predict_proba(vec.transform(dev_x))[:, 1]
        t = om.choose_threshold(dev_y, p_dev)
        out["by_repeat"][str(r)] = {
            "real_dev_auc": round(float(roc_auc_score(real_y, p_real)), 4),
            "real_dev_ap": round(float(average_precision_score(real_y, p_real)), 4),
            "cold_dev_macro_f1": round(macro_f1_at(dev_y, p_dev, t), 4),
            "seconds": round(seconds, 1),
        }
        print(f"repeat {r}: {out['by_repeat'][str(r)]}", file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
