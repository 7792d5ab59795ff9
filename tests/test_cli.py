"""What a newcomer meets first: empty inputs, a wrong --output, a mistyped --set, --help, describe."""

from __future__ import annotations

import sys

import polars as pl
import pytest

from conftest import PROJECT, SAMPLE, run_cli
from pipeline.cli import OUTPUT_FILES, build_parser
from pipeline.config import ConfigError, load_config


@pytest.mark.parametrize("name, content", [("empty.jsonl", b""), ("empty.csv", b""), ("header.csv", b"comment_id,text\n")])
def test_an_empty_input_writes_zero_row_outputs_without_loading_a_model(tmp_path, sample_run, name, content):
    src = tmp_path / name
    src.write_bytes(content)
    out = tmp_path / "run"
    # In one process, so we can see which libraries the run needed: no torch means no model was loaded.
    code = (
        "import sys\nfrom pipeline.cli import main\nrc = main(['run', '--input', sys.argv[1], '--output', sys.argv[2]])\n"
        "print('torch loaded' if 'torch' in sys.modules else 'no torch'); sys.exit(rc)"
    )
    import subprocess

    result = subprocess.run([sys.executable, "-c", code, str(src), str(out)], cwd=PROJECT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "no torch" in result.stdout
    assert f"{src}: no comments in this file" in result.stderr
    assert result.stdout.startswith("done: 0 rows in, 0 kept")
    for f in ("comments.parquet", "topics.parquet", "review/queue.parquet", "review/map.parquet"):
        empty, full = pl.read_parquet(out / f), pl.read_parquet(sample_run / f)
        assert empty.height == 0 and empty.schema == full.schema, f
    assert (out / "review" / "index.html").exists() and (out / "manifest.json").exists()


def test_output_naming_a_file_exits_2_in_one_line(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("not a directory")
    result = run_cli("run", "--input", str(SAMPLE), "--output", str(target))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "must be a directory" in result.stderr and str(target) in result.stderr


@pytest.mark.parametrize(
    "assignment, wanted",
    [
        ("topics.nonsense=3", ["--set 'topics.nonsense=3'", "min_cluster_size"]),
        ("topics.min_cluster=3", ["did you mean 'min_cluster_size'"]),
        ("topic.min_cluster_size=3", ["did you mean 'topics'"]),
        ("topics.min_cluster_size=abc", ["--set 'topics.min_cluster_size=abc'", "integer"]),
    ],
)
def test_a_bad_set_names_the_argument_and_a_valid_key(assignment, wanted):
    with pytest.raises(ConfigError) as e:
        load_config(None, [assignment])
    for text in wanted:
        assert text in str(e.value)
    assert "default.yaml" not in str(e.value)


def test_help_names_every_command():
    result = run_cli("--help")
    commands = build_parser()._subparsers._group_actions[0].choices
    assert len(commands) >= 8
    for name in commands:
        assert name in result.stdout


def test_describe_lists_every_file_a_run_writes(sample_run):
    written = {
        p.relative_to(sample_run).as_posix()
        for p in sample_run.rglob("*")
        if p.is_file() and "_stages" not in p.parts and not p.name.startswith(".")
    }
    listed = {f.split(" ")[0] for f in OUTPUT_FILES}
    assert written <= listed, written - listed
    described = run_cli("describe").stdout
    for f in written:
        assert f in described
