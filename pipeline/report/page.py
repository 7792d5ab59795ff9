"""review/index.html: one self-contained page a moderator opens after a run.

Built from the run's own files (comments.parquet, topics.parquet, review/queue.parquet,
manifest.json and review/map.parquet), so `python -m pipeline report DIR` rebuilds it without
recomputing anything. Plots are plotly figures with plotly.js inlined (no network); the page is a
Jinja2 template (pipeline/resources/report.html.j2) with the queue as embedded JSON that the page
filters, searches and renders in slices, and decisions the moderator exports as CSV.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.io.fileio import atomic_write_text
from pipeline.scoring.score import CATEGORIES, REVIEW_KINDS

KINDS = tuple(REVIEW_KINDS)  # what a queue entry can be flagged for
TIMELINES = 5  # campaigns whose copies are plotted by thread and time

TEMPLATE = Path(__file__).resolve().parents[1] / "resources" / "report.html.j2"
MAP_POINTS = 3000  # a scatter of more points says nothing more and slows the page
MEMBERS_SHOWN = 50


def map_points(table: pl.DataFrame, seed: int) -> pl.DataFrame:
    """2-D map of the duplicate-group representatives: the first two principal components of their
    embeddings (a seeded sample of at most MAP_POINTS), with topic and size."""
    reps = table.select("is_dup_rep", "embedding", "topic_id", "dup_group_size", "text").filter(pl.col("is_dup_rep"))
    if reps.height > MAP_POINTS:
        reps = reps.sample(MAP_POINTS, seed=seed)
    if reps.height < 3:
        return pl.DataFrame(schema={"x": pl.Float32, "y": pl.Float32, "topic_id": pl.Int64, "dup_group_size": pl.Int64, "text": pl.String})
    x = reps["embedding"].to_numpy().astype(np.float32)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    xy *= np.sign(vt[:2].sum(axis=1))  # SVD's sign is arbitrary: fix it so reruns draw the same map
    return pl.DataFrame(
        {
            "x": xy[:, 0],
            "y": xy[:, 1],
            "topic_id": reps["topic_id"],
            "dup_group_size": reps["dup_group_size"],
            "text": reps["text"].str.slice(0, 80),
        }
    )


def _figures(comments: pl.DataFrame, topics: pl.DataFrame, points: pl.DataFrame | None) -> dict[str, str]:
    import plotly.graph_objects as go

    named = topics.filter(pl.col("topic_id") >= 0).sort("size", descending=True).head(30)
    names = [f"{t}: {label}" for t, label in zip(named["topic_id"], named["topic_label"])]
    figs = {}
    figs["topic_sizes"] = go.Figure(go.Bar(x=named["size"].to_list(), y=names, orientation="h"))
    figs["topic_sizes"].update_layout(title="Topics by number of comments", yaxis={"autorange": "reversed"})
    by_topic = comments.group_by("topic_id").agg([pl.col(f"flag_{c}").sum() for c in CATEGORIES])
    by_topic = named.select("topic_id").join(by_topic, on="topic_id", how="left")
    figs["flags_per_topic"] = go.Figure([go.Bar(name=c, x=by_topic[f"flag_{c}"].to_list(), y=names, orientation="h") for c in CATEGORIES])
    figs["flags_per_topic"].update_layout(title="Flagged comments per topic", barmode="stack", yaxis={"autorange": "reversed"})
    groups = (
        comments.group_by("dup_group")
        .agg(pl.len().alias("n"), pl.col("text").first())
        .filter(pl.col("n") > 1)
        .sort(["n", "dup_group"], descending=[True, False])
        .head(15)
    )
    figs["campaigns"] = go.Figure(go.Bar(x=groups["n"].to_list(), y=[t[:30] for t in groups["text"].to_list()], orientation="h"))
    figs["campaigns"].update_layout(title="Largest duplicate campaigns (copies)", yaxis={"autorange": "reversed"})
    figs["scores"] = go.Figure([go.Histogram(x=comments[f"score_{c}"].to_list(), name=c, opacity=0.6, nbinsx=20) for c in CATEGORIES])
    figs["scores"].update_layout(title="Score distributions", barmode="overlay", yaxis={"type": "log"})
    if points is not None and points.height:
        figs["map"] = go.Figure(
            go.Scattergl(
                x=points["x"].to_list(),
                y=points["y"].to_list(),
                mode="markers",
                text=points["text"].to_list(),
                marker={
                    "color": points["topic_id"].to_list(),
                    "colorscale": "Turbo",
                    "size": 6,
                    "showscale": True,
                    "colorbar": {"title": "topic"},
                },
            )
        )
        figs["map"].update_layout(title="Map of comments (first two principal components of the embeddings), coloured by topic")
    for f in figs.values():
        f.update_layout(margin={"l": 10, "r": 10, "t": 40, "b": 10}, height=420, template="plotly_white")
    return {k: f.to_json() for k, f in figs.items()}


def _campaign_timeline(comments: pl.DataFrame, path: Path) -> dict[str, str]:
    """The copies of the top flagged campaigns over time, one row of points per thread."""
    import plotly.graph_objects as go

    if not path.exists() or "flag_campaign" not in comments.columns or "created_at" not in comments.columns:
        return {}
    top = pl.read_parquet(path).filter(pl.col("campaign_score") >= 0).head(TIMELINES)
    copies = comments.filter(pl.col("flag_campaign") & pl.col("created_at").is_not_null())
    if not top.height or not copies.height:
        return {}
    fig = go.Figure()
    for r in top.iter_rows(named=True):
        groups = r.get("variant_groups") or [r["dup_group"]]
        rows = copies.filter(pl.col("dup_group").is_in(groups)).sort("created_at")
        if rows.height:
            fig.add_trace(
                go.Scatter(
                    x=[t.isoformat() for t in rows["created_at"].to_list()],
                    y=rows["thread_id"].fill_null("(no thread)").to_list(),
                    mode="markers",
                    name=f"{r['campaign_score']:.2f} {r['representative_text'][:24]}",
                    text=rows["text"].to_list(),
                )
            )
    fig.update_layout(
        title="Campaigns: each copy by thread and time (UTC)",
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        height=420,
        template="plotly_white",
    )
    return {"campaign_timeline": fig.to_json()} if fig.data else {}


def queue_records(queue: pl.DataFrame) -> list[dict]:
    rows = []
    for r in queue.iter_rows(named=True):
        members = r["member_ids"]
        rows.append(
            {
                "rank": r["rank"],
                "group": r["dup_group"],
                "size": r["dup_group_size"],
                "priority": r["review_priority"],
                "text": r["representative_text"],
                "rep": r["representative_id"],
                "members": members[:MEMBERS_SHOWN],
                "more_members": max(0, len(members) - MEMBERS_SHOWN),
                "categories": r["flagged_categories"],
                "scores": {c: round(r[score], 3) for c, (score, _, _) in REVIEW_KINDS.items() if score in r},
                "evidence": r["evidence"],
                "topic": r["topic_id"],
                "topic_label": r["topic_label"],
            }
        )
    return rows


def build(out_dir: Path, manifest: dict | None = None) -> Path:
    """Write out_dir/review/index.html from the run's files (and its manifest, read from
    manifest.json unless given: a run builds the page before it writes the manifest last)."""
    import jinja2
    from plotly.offline import get_plotlyjs

    if manifest is None:
        path = out_dir / "manifest.json"
        if not path.exists():
            raise FileNotFoundError(f"{out_dir}: no manifest.json; give the output directory of a finished run")
        manifest = json.loads(path.read_text(encoding="utf-8"))
    comments = pl.read_parquet(out_dir / "comments.parquet")
    topics = pl.read_parquet(out_dir / "topics.parquet")
    queue = pl.read_parquet(out_dir / "review" / "queue.parquet")
    map_file = out_dir / "review" / "map.parquet"
    points = pl.read_parquet(map_file) if map_file.exists() else None
    summary = manifest.get("summary") or {
        "rows_in": comments.height,
        "kept": comments.height,
        "dup_groups": comments["dup_group"].n_unique(),
        "flagged": {c: int(comments[f"flag_{c}"].sum()) for c in CATEGORIES},
        "review_groups": queue.height,
    }
    summary["flagged"] = {c: summary["flagged"].get(c, 0) for c in KINDS}
    decided = comments.filter(pl.col("decision").is_not_null())["dup_group"].n_unique() if "decision" in comments.columns else 0
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE.parent), autoescape=True)
    html = env.get_template(TEMPLATE.name).render(
        run_id=manifest.get("run_id", out_dir.name),
        summary=summary,
        decided=decided,
        categories=KINDS,
        topics=[{"id": t, "label": lab} for t, lab in zip(topics["topic_id"], topics["topic_label"])],
        queue=queue_records(queue),
        figures=_figures(comments, topics, points) | _campaign_timeline(comments, out_dir / "campaigns.parquet"),
        plotly_js=get_plotlyjs(),
    )
    path = out_dir / "review" / "index.html"
    atomic_write_text(html, path)
    return path
