"""The bench's smoke mode: every stage of the performance suite runs on both backends, error-free."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
BENCH_PACKAGES = ("fastapi", "uvicorn", "matplotlib")
SMOKE_TIMEOUT_S = 240  # it takes about 30 s; the rest is for a busy machine


def test_smoke_runs_every_stage_on_both_backends_without_errors(
    mysql_server_url: str, tmp_path: Path
) -> None:
    missing = [name for name in BENCH_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(
            f"The bench smoke test needs {', '.join(missing)}: install the bench's requirements"
            " with .venv/bin/pip install -r requirements-bench.txt (scripts/bench does it).",
            pytrace=False,
        )
    command = [
        sys.executable, str(PROJECT_DIR / "bench" / "load.py"), "--smoke", "--json",
        "--db", "sqlite", "--db", mysql_server_url, "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        cwd=PROJECT_DIR,
    )
    assert done.returncode == 0, f"bench --smoke exited {done.returncode}:\n{done.stderr[-4000:]}"
    result = json.loads(done.stdout)
    assert result["problems"] == []
    databases = result["databases"]
    assert [d["db"].split(":")[0] for d in databases] == ["sqlite (temporary file)", "mysql"]
    for database in databases:
        targets = {(row["op"], row["target"]) for row in database["sweep"]}
        searchers = ("waymark", "peer", "peer-snapshot", "echo", "store")
        assert {("search_peak", t) for t in searchers} <= targets
        buyers = {row["target"] for row in database["buy"]}
        assert buyers == {"waymark", "peer-snapshot", "store"}
        # Waymark beside the peer doing the same work: the search and buy, with both p99s.
        fair = {(f["op"], f["connections"]): f for f in database["fair_peer"]}
        assert {op for op, _ in fair} == {"search_peak", "buy"}
        for f in fair.values():
            assert f["per_s"] and f["p99"] and f["waymark_p99_ms"] and f["peer_p99_ms"], f
        for row in database["sweep"] + database["buy"]:
            assert row["overall"]["errors"] == 0, row["first_error"]
            assert row["overall"]["requests"] > 0, row
        assert all(phase["errors"] == 0 for phase in database["storm"]["phases"])
        assert all(idle["errors"] == 0 for idle in database["idle"])
    files = result["meta"]["files"]
    assert Path(files["png"]).read_bytes().startswith(b"\x89PNG")
    assert json.loads(Path(files["json"]).read_text())["databases"]
