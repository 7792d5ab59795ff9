"""Chinese comment moderation and clustering: near-duplicates, topics, flags and a review queue.

Commands: run, train-flags, evaluate, sample-flags, report, serve, moderator, distill-static, config,
describe.

Exit codes a scheduler can act on: 0 success, 2 bad input or config, 3 directory locked by
another run, 1 internal error. Errors print one line saying what to do; --debug adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_LOCKED = 0, 1, 2, 3
# What a run writes into its output directory (the contract; `describe` lists it).
OUTPUT_FILES = (
    "comments.parquet",
    "topics.parquet",
    "campaigns.parquet (duplicate groups pushed across threads; may have no rows)",
    "review/queue.parquet",
    "review/queue.csv",
    "review/index.html",
    "review/map.parquet",
    "quarantine.parquet (only when rows were rejected)",
    "manifest.json (written last)",
    "_stages/ (stored stage results for reruns)",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {"time": self.formatTime(record), "level": record.levelname, "logger": record.name, "message": record.getMessage()},
            ensure_ascii=False,
        )


def setup_logging(quiet: bool, log_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_json else logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    for noisy in ("sentence_transformers", "transformers", "numba", "jieba", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    from pipeline.config import OWN_LABELLED_SETS

    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description=__doc__.splitlines()[0],
        epilog="`python -m pipeline COMMAND --help` shows a command's options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    run = sub.add_parser("run", help="label a batch of comments: near-duplicates, topics, flags")
    run.add_argument(
        "--input",
        "-i",
        action="append",
        required=True,
        type=Path,
        help="a .jsonl, .csv, .tsv, .parquet or thread .txt file; repeat for several",
    )
    run.add_argument("--output", "-o", required=True, type=Path, help="output directory")
    run.add_argument("--config", "-c", type=Path, help="YAML config (default: configs/default.yaml)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config knob, e.g. --set topics.min_cluster_size=7",
    )
    run.add_argument("--executor", choices=("local", "ray"), help="where map-like stage work runs (same as --set run.executor=...)")
    run.add_argument("--state-dir", type=Path, help="state kept between batches (same as --set run.state_dir=...)")
    run.add_argument(
        "--decisions",
        type=Path,
        help="moderators' decisions (CSV/JSON exported from review/index.html) to apply; kept in the state directory",
    )
    run.add_argument("--topics-from", type=Path, help="assign this batch to the topics saved by another run (its state directory)")
    run.add_argument("--quiet", "-q", action="store_true", help="only warnings, errors and the summary line")
    run.add_argument("--log-json", action="store_true", help="log lines as JSON objects")
    run.add_argument("--debug", action="store_true", help="show tracebacks")

    train = sub.add_parser(
        "train-flags",
        help="retrain the flag models in models/: offence n-grams and the conspiracy models (--encoder: the fine-tuned offence encoder)",
    )
    shared = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    train.add_argument("--cold", type=Path, default=shared / "cold", help="COLD directory (train.csv, dev.csv)")
    train.add_argument("--swsr", type=Path, default=shared / "swsr", help="SWSR directory (SexComment.csv)")
    train.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "models" / "offence")
    train.add_argument(
        "--conspiracy-only",
        action="store_true",
        help="retrain only models/conspiracy and models/conspiracy_ngram from the own sets (--own), ~2 minutes",
    )
    train.add_argument("--conspiracy-out", type=Path, default=Path(__file__).resolve().parents[1] / "models" / "conspiracy")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--encoder",
        action="store_true",
        help="train only the fine-tuned encoder (models/offence_encoder); needs a GPU to finish in minutes",
    )
    train.add_argument(
        "--adapt-encoder",
        action="store_true",
        help="continue fine-tuning the shipped encoder (--encoder-out) on the own sets' training rows plus "
        "a COLD sample, choosing on their held-out rows, then refit the blend; 2 CPU cores: about 17 minutes an epoch with the project's sets. "
        "Give your own labelled comments with --own to adapt it to your platform",
    )
    train.add_argument(
        "--extra-encoder",
        action="store_true",
        help="train only models/offence_encoder_extra (one new layer on e5's states, then its blend); "
        "a GPU: minutes; 2 CPU cores: e5 over ~32,000 texts first (about an hour)",
    )
    train.add_argument("--device", default="cpu", help="torch device for --encoder and --adapt-encoder, e.g. cuda")
    train.add_argument(
        "--epochs", type=int, default=3, help="epochs for --encoder and --adapt-encoder (the best one on held-out rows is kept)"
    )
    train.add_argument("--limit", type=int, default=0, help="--encoder smoke test: train and choose on this many COLD rows")
    train.add_argument("--encoder-out", type=Path, default=Path(__file__).resolve().parents[1] / "models" / "offence_encoder")
    train.add_argument(
        "--own",
        type=Path,
        action="append",
        default=list(OWN_LABELLED_SETS),
        help="add a labelled set to the project's own (config.OWN_LABELLED_SETS in pipeline/training/data/): "
        "CSV with id, text, abusive, hate, conspiracy and optionally split (train / heldout / test; "
        "without it even ids train and odd ids are held out)",
    )

    ev = sub.add_parser("evaluate", help="precision, recall, F1 per category of the flags against labels")
    ev.add_argument("--input", "-i", action="append", required=True, type=Path, help="comments, as for run")
    ev.add_argument("--labels", required=True, type=Path, help="CSV/parquet with 0/1 columns: abuse, hate, conspiracy, offensive")
    ev.add_argument("--config", "-c", type=Path)
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ev.add_argument("--debug", action="store_true")

    sf = sub.add_parser("sample-flags", help="a seeded random sample of a run's flagged groups with their evidence, to judge precision")
    sf.add_argument("output", type=Path, help="the run's output directory")
    sf.add_argument("--per-category", type=int, default=30, help="flagged groups drawn per category (default 30)")
    sf.add_argument(
        "--category", action="append", choices=("abuse", "hate", "conspiracy", "spam", "campaign"), help="only these categories"
    )
    sf.add_argument("--seed", type=int, default=0)
    sf.add_argument("--out", type=Path, help="also write the sample as CSV with an empty `verdict` column to fill in")

    rep = sub.add_parser("report", help="rebuild review/index.html of a finished run without recomputing")
    rep.add_argument("output", type=Path, help="the run's output directory")

    sub.add_parser(
        "distill-static",
        help="build the fast static embedding model (embed.model: static-e5) from e5, "
        "once per machine (~10 minutes on 2 cores); runs also build it on first use",
    )
    from pipeline.desk import commands as desk_commands

    desk_commands.add_parsers(sub)
    sub.add_parser("config", help="print every config knob with its default and meaning")
    sub.add_parser("describe", help="print the stage graph: what each stage needs and adds")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.runner import Runner

    overrides = list(args.overrides)
    if args.state_dir:
        overrides.append(f"run.state_dir={args.state_dir}")
    if args.topics_from:
        overrides.append(f"topics.model_from={args.topics_from}")
    if args.quiet:
        overrides.append("run.progress=false")
    if args.executor:
        overrides.append(f"run.executor={args.executor}")
    cfg = load_config(args.config, overrides)
    started = time.time()
    manifest = Runner(args.input, args.output, cfg, decisions=args.decisions).run()
    s = manifest["summary"]
    flagged = " ".join(f"{c}={n}" for c, n in s["flagged"].items())
    print(
        f"done: {s['rows_in']} rows in, {s['kept']} kept, {s['quarantined']} quarantined, "
        f"{s['dup_groups']} duplicate groups, {s['topics']} topics, flagged {flagged}, "
        f"{s['review_groups']} groups to review, {time.time() - started:.1f}s -> {args.output}"
    )
    if not args.quiet:
        print(
            f"  comments: {args.output / 'comments.parquet'}\n  page:     {args.output / 'review' / 'index.html'}\n  review:   {args.output / 'review' / 'queue.csv'}\n"
            f"  topics:   {args.output / 'topics.parquet'}\n  manifest: {args.output / 'manifest.json'}"
        )
    return EXIT_OK


def cmd_train_flags(args: argparse.Namespace) -> int:
    from pipeline.training import model_card

    code = _train_flags(args)
    # Every model's card is regenerated from its metadata, so no card describes an older model.
    extra = args.encoder_out.with_name("offence_encoder_extra")
    for folder in (args.out, args.conspiracy_out, args.conspiracy_out.with_name("conspiracy_ngram"), args.encoder_out, extra):
        if folder.name in model_card.SHIPPED and (folder / model_card.SHIPPED[folder.name][0]).exists():
            model_card.write_card(folder)
    return code


def _train_flags(args: argparse.Namespace) -> int:
    from pipeline.training import offence_ngram

    for d in (args.cold,):
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: COLD data not found; pass --cold DIR (with train.csv and dev.csv)")
    if args.adapt_encoder:
        from pipeline.training import offence_blend, offence_encoder_adapt

        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        meta = offence_encoder_adapt.adapt_encoder(
            args.encoder_out, args.cold, args.own, args.encoder_out, device=args.device, epochs=args.epochs, seed=args.seed, log=log
        )
        blend = offence_blend.refit(args.encoder_out, args.out, args.cold, args.own, log=log)
        print(json.dumps({"offence_encoder": meta["adaptation"]["selection"], "blend": blend}, ensure_ascii=False))
        return EXIT_OK
    if args.extra_encoder:
        from pipeline.training import offence_blend, offence_encoder_extra

        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        out = args.encoder_out.with_name("offence_encoder_extra")
        # The shipped recipe (models/offence_encoder_extra/MODEL_CARD.md): lr 3e-4, 4 epochs, own rows x6.
        meta = offence_encoder_extra.train_extra_encoder(
            args.cold, args.own, out, device=args.device, epochs=4, lr=3e-4, own_repeat=6, limit=args.limit, seed=args.seed, log=log
        )
        blend = offence_blend.refit(out, args.out, args.cold, args.own, log=log)
        print(json.dumps({"offence_encoder_extra": {k: meta.get(k) for k in ("threshold", "dev_macro_f1")}, "blend": blend}))
        return EXIT_OK
    if args.encoder:
        from pipeline.training import offence_encoder

        meta = offence_encoder.train_encoder(
            args.cold,
            args.own,
            args.encoder_out,
            device=args.device,
            epochs=args.epochs,
            limit=args.limit,
            seed=args.seed,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
        print(json.dumps({"offence_encoder": {k: meta[k] for k in ("threshold", "dev_macro_f1")}}))
        return EXIT_OK
    from pipeline.training import conspiracy

    if not args.conspiracy_only:
        from pipeline.training import offence_blend

        metrics = offence_ngram.train(args.cold, args.swsr if args.swsr.is_dir() else None, args.out, seed=args.seed, own_sets=args.own)
        print(json.dumps({"offence": metrics}, ensure_ascii=False))
        # Each encoder's blend weighs the n-gram model's log-odds, so a new n-gram model needs new weights.
        for encoder_dir in (args.encoder_out, args.encoder_out.with_name("offence_encoder_extra")):
            if (encoder_dir / "model.json").exists():
                blend = offence_blend.refit(
                    encoder_dir, args.out, args.cold, args.own, log=lambda line: print(line, file=sys.stderr, flush=True)
                )
                print(json.dumps({f"blend {encoder_dir.name}": blend}, ensure_ascii=False))
    head = conspiracy.train(args.own, args.conspiracy_out, seed=args.seed)
    print(json.dumps({"conspiracy": head}, ensure_ascii=False))
    ngram = conspiracy.train_ngram(args.own, args.conspiracy_out.with_name("conspiracy_ngram"), seed=args.seed)
    print(json.dumps({"conspiracy_ngram": ngram}, ensure_ascii=False))
    return EXIT_OK


def cmd_describe() -> int:
    from pipeline.runner import STAGES

    for s in STAGES:
        print(
            f"{s.name} (v{s.version}, config section: {s.config_section})\n  needs: {', '.join(s.requires)}\n  adds:  {', '.join(s.adds)}"
        )
    print("export\n  writes: " + ", ".join(OUTPUT_FILES))
    return EXIT_OK


def missing_dependency(e: ModuleNotFoundError) -> str:
    return (
        f"error: the Python package {e.name!r} is missing from {sys.executable}; run the commands with the "
        f"project's environment (.venv/bin/python -m pipeline ...), or install it: pip install -e '.[test,ray]'"
    )


def main(argv: list[str] | None = None) -> int:
    try:  # the parser and the error types already import the project's libraries
        args = build_parser().parse_args(argv)
        from pipeline.config import ConfigError, describe_config
        from pipeline.io.lock import LockedError
        from pipeline.io.readers import InputFileError
    except ModuleNotFoundError as e:
        print(missing_dependency(e), file=sys.stderr)
        return EXIT_INTERNAL
    setup_logging(getattr(args, "quiet", False), getattr(args, "log_json", False))

    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "train-flags":
            return cmd_train_flags(args)
        if args.command == "evaluate":
            from pipeline.config import load_config
            from pipeline.report.evaluate import evaluate, format_table

            print(format_table(evaluate(args.input, args.labels, load_config(args.config, args.overrides))))
            return EXIT_OK
        if args.command == "distill-static":
            from pipeline.models import static_model

            folder = static_model.ensure_model(progress=True)
            print(f"{static_model.MODEL_ID}: {folder}")
            return EXIT_OK
        if args.command == "config":
            print(describe_config())
            return EXIT_OK
        if args.command == "sample-flags":
            from pipeline.report import sample_flags

            return sample_flags.main(args.output, args.per_category, args.seed, args.out, args.category)
        if args.command in ("serve", "moderator"):
            from pipeline.desk import commands as desk_commands

            return desk_commands.run(args)
        if args.command == "report":
            from pipeline.report import page as report

            print(report.build(args.output))
            return EXIT_OK
        return cmd_describe()
    except (InputFileError, ConfigError, FileNotFoundError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except LockedError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_LOCKED
    except ModuleNotFoundError as e:
        print(missing_dependency(e), file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to finish (finished stages are reused)", file=sys.stderr)
        return 130
    except Exception as e:  # the last line a scheduler's log shows; --debug gives the traceback
        if getattr(args, "debug", False):
            raise
        print(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback and report it)", file=sys.stderr)
        return EXIT_INTERNAL
