"""`python -m pipeline serve` and `python -m pipeline moderator add|list|revoke`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parsers(sub) -> None:
    serve = sub.add_parser("serve", help="the moderators' desk: a web queue over a run; decisions go to STATE/desk.sqlite")
    serve.add_argument("--state-dir", required=True, type=Path, help="the state directory the next `run --state-dir` reads")
    serve.add_argument("--run", required=True, type=Path, help="a finished run's output directory")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", default=8765, type=int)

    mod = sub.add_parser("moderator", help="desk moderators: add (prints a new token), list, revoke")
    mod.add_argument("action", choices=("add", "list", "revoke"))
    mod.add_argument("name", nargs="?", help="the moderator's name (add, revoke)")
    mod.add_argument("--state-dir", required=True, type=Path)


def run(args: argparse.Namespace) -> int:
    from pipeline.desk.store import DeskError, DeskStore
    from pipeline.io.readers import InputFileError

    if args.command == "serve":
        from pipeline.desk.server import serve

        serve(args.state_dir, args.run, args.host, args.port)
        return 0
    store = DeskStore(args.state_dir)
    try:
        if args.action == "list":
            for m in store.moderators():
                print(f"{m['name']}\tadded {m['created_at']}\t{'revoked ' + m['revoked_at'] if m['revoked_at'] else 'active'}")
            return 0
        if not args.name:
            raise InputFileError(f"moderator {args.action} needs a NAME")
        if args.action == "add":
            token = store.add_moderator(args.name)
            print(f"moderator {args.name!r} added to {store.path}; their token (shown once, only its hash is kept):")
            print(token)
            return 0
        store.revoke_moderator(args.name)
        print(f"moderator {args.name!r} revoked: their token no longer works")
        return 0
    except DeskError as e:
        raise InputFileError(str(e)) from None
