"""Shared fixtures. Tests that need ../shared data say so and skip cleanly when it is absent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"
SEED = SHARED / "seed" / "000_0aee8a93e9b1567e.txt"
SEED_LABELS = SHARED / "eval" / "seed_labels.csv"


def needs_shared(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"needs ../shared data: {path} is absent")


def seed_comments() -> list[str]:
    from pipeline.io.readers import read_inputs

    raw = read_inputs([SEED], "comment_id", "text")
    return raw["raw_text"].to_list()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def run_cli(*args: str, cwd: Path = PROJECT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=900
    )


SAMPLE = PROJECT / "samples" / "comments.jsonl"


def run_pipeline(inputs: list[Path], out: Path, *overrides: str, decisions: Path | None = None, config: Path | None = None) -> dict:
    """A run in this process (the models load once per test session), without progress bars."""
    from pipeline.config import load_config
    from pipeline.runner import Runner

    return Runner(inputs, out, load_config(config, ["run.progress=false", *overrides]), decisions=decisions).run()


def stage_context(**fields):
    """A StageContext as the runner builds one, for calling a stage directly."""
    from pipeline.models.e5_model import default_cache_dir
    from pipeline.stage import StageContext

    return StageContext(**{"seed": 0, "cache_dir": default_cache_dir(), "state_dir": None, "progress": False, **fields})


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory) -> Path:
    """The bundled sample run once through the command line, as a user runs it (read-only)."""
    out = tmp_path_factory.mktemp("sample") / "run"
    result = run_cli("run", "--input", str(SAMPLE), "--output", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out


def browser():
    """Headless Debian chromium driven by selenium; the test skips when either is absent."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    missing = [name for name, found in (("chromium", chromium), ("chromedriver", driver)) if not found]
    if missing:
        packages = " ".join({"chromium": "chromium", "chromedriver": "chromium-driver"}[m] for m in missing)
        pytest.skip(f"{' and '.join(missing)} not found on PATH (Debian/Ubuntu: apt-get install {packages})")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)
