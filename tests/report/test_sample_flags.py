import polars as pl

from conftest import run_cli


def comments(tmp_path):
    # A small comments table in the output contract: two copies of one flagged comment, one other
    # flagged group, one clean comment.
    table = pl.DataFrame(
        {
            "comment_id": ["a", "b", "c", "d"],
            "text": ["你就是个傻逼", "你就是个傻逼!", "背后都是资本在操控", "今天天气不错"],
            "dup_group": ["g1", "g1", "g2", "g3"],
            "score_abuse": [0.95, 0.95, 0.1, 0.0],
            "score_hate": [0.2, 0.2, 0.0, 0.0],
            "score_conspiracy": [0.0, 0.0, 0.8, 0.0],
            "flag_abuse": [True, True, False, False],
            "flag_hate": [False] * 4,
            "flag_conspiracy": [False, False, True, False],
            "evidence_abuse": [["insult '傻逼'"], ["insult '傻逼'"], [], []],
            "evidence_hate": [[], [], [], []],
            "evidence_conspiracy": [[], [], ["rule behind_the_scenes '背后都是资本在操控'"], []],
        }
    )
    run = tmp_path / "run"
    run.mkdir()
    table.write_parquet(run / "comments.parquet")
    return run


def test_samples_each_flagged_group_once_with_its_evidence(tmp_path):
    from pipeline.report.sample_flags import sample

    run = comments(tmp_path)
    table = sample(run, per_category=30, seed=0)
    assert table.filter(pl.col("category") == "abuse")["dup_group"].to_list() == ["g1"]
    assert table.filter(pl.col("category") == "abuse")["flagged_copies"].to_list() == [2]
    assert table.filter(pl.col("category") == "conspiracy")["evidence"].to_list() == [["rule behind_the_scenes '背后都是资本在操控'"]]
    assert table.filter(pl.col("category") == "hate").height == 0
    assert "g3" not in table["dup_group"].to_list()


def test_the_sample_is_seeded_and_bounded(tmp_path):
    from pipeline.report.sample_flags import sample

    run = tmp_path / "run"
    run.mkdir()
    n = 50
    pl.DataFrame(
        {
            "comment_id": [str(i) for i in range(n)],
            "text": [f"傻逼{i}" for i in range(n)],
            "dup_group": [f"g{i}" for i in range(n)],
            **{f"score_{c}": [0.9] * n for c in ("abuse", "hate", "conspiracy")},
            "flag_abuse": [True] * n,
            "flag_hate": [False] * n,
            "flag_conspiracy": [False] * n,
        }
    ).write_parquet(run / "comments.parquet")
    a, b, c = sample(run, 10, seed=1), sample(run, 10, seed=1), sample(run, 10, seed=2)
    assert a.height == 10 and a.equals(b) and not a.equals(c)


def test_cli_prints_the_sample_and_writes_a_verdict_sheet(tmp_path):
    run = comments(tmp_path)
    out = tmp_path / "sheet.csv"
    result = run_cli("sample-flags", str(run), "--per-category", "5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "== abuse: 1 of 1 flagged groups" in result.stdout and "insult '傻逼'" in result.stdout
    sheet = pl.read_csv(out)
    assert set(sheet["category"]) == {"abuse", "conspiracy"} and "verdict" in sheet.columns
    missing = run_cli("sample-flags", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "comments.parquet" in missing.stderr
