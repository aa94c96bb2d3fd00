"""Prometheus metrics at /metrics (PROTOCOL.md 1.2, Operating it): lint-clean, and as stats says."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.ports import unused_port
from tests.wire import ServerProcess, register_and_login


def metrics_url(server: ServerProcess) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = re.search(r"metrics on (http://[\d.]+:\d+/metrics)", server.log())
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no metrics line in the log:\n{server.log()}")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - 127.0.0.1 only
        assert response.status == 200
        return response.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_agree_with_stats_and_pass_the_linter(tmp_path: Path) -> None:
    with ServerProcess(
        tmp_path,
        db_url=f"sqlite:///{tmp_path / 'm.db'}",
        extra_args=("--metrics-port", str(unused_port())),  # 0 would switch the metrics off
    ) as server:
        server.create_admin("metrician", "correct horse")
        url = metrics_url(server)
        with server.client() as member, server.client() as admin:
            register_and_login(member, "measured")
            for _ in range(3):
                member.call("search_walks", area="peak")
            member.error("borrow", book_id=999_999)
            member.error("stats")
            admin.call("login", username="metrician", password="correct horse")
            stats = admin.call("stats")
            text = scrape(url)
    found = samples(text)
    for cmd, count in stats["requests"].items():
        ok = found.get(("waymark_requests_total", (("cmd", cmd), ("code", "ok"))), 0)
        errors = sum(
            value
            for (name, labels), value in found.items()
            if name == "waymark_requests_total"
            and ("cmd", cmd) in labels
            and ("code", "ok") not in labels
        )
        own = 1 if cmd == "stats" else 0  # the admin's stats call, counted once it answered
        assert ok + errors == count + own, (cmd, ok, errors, count)
    for code, count in stats["errors"].items():
        scraped = sum(
            value
            for (name, labels), value in found.items()
            if name == "waymark_requests_total" and ("code", code) in labels
        )
        assert scraped == count, (code, scraped, count)
    assert found[("waymark_requests_total", (("cmd", "search_walks"), ("code", "ok")))] == 3
    assert found[("waymark_request_duration_seconds_count", (("cmd", "search_walks"),))] == 3
    assert found[("waymark_connections", ())] == 2  # the member and the admin, still connected
    for gauge in (
        "waymark_handshakes_in_progress",
        "waymark_db_connections_in_use",
        "waymark_catalogue_snapshot_age_seconds",
        "waymark_notices_pending",
        "waymark_notices_failed",
        "waymark_healthy",
    ):
        assert (gauge, ()) in found, gauge
    promtool = shutil.which("promtool")
    if promtool:  # Debian's prometheus package; without it, the parser above is the check
        linted = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert linted.returncode == 0, linted.stdout + linted.stderr


def test_metrics_stay_off_unless_asked_for(server: ServerProcess) -> None:
    with server.client() as client:
        client.call("hello")
    assert "metrics on" not in server.log()
