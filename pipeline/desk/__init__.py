"""The moderators' desk: a shared web queue over a run, decisions in SQLite, an audit log.

store.py   desk.sqlite: moderators (token hashes), decisions, the append-only audit log, claims
queue.py   a run's flagged groups, filtered and paged for the page and the API
server.py  the FastAPI app (pages, JSON API, auth, CSRF) and `serve`
commands.py  the `serve` and `moderator` commands
"""
