"""The server's jobs beside the requests: the sweep, the mail sender, the metrics endpoint."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import mailer
import workers
from db import Store
from metrics import Metrics
from outbox import MailSender
from settings import ServerConfig, sweep_policy
from snapshot import CatalogueSnapshot
from stats import ServerStats
from sweep import Periodic, sweep

log = logging.getLogger("waymark.server")

MAIL_POLL_S = 2.0  # how soon a new notice's email leaves: a claim is one small transaction


def start_jobs(config: ServerConfig, store: Store) -> list[Periodic]:
    """Start the jobs these settings ask for; the caller stops them (Periodic.stop)."""
    policy = sweep_policy(config)
    jobs = [
        Periodic(
            lambda: sweep(store, policy, int(time.time())),
            config.notice_interval_s,
            "waymark-sweep",
        )
    ]
    if config.smtp_url:
        relay = mailer.mail_relay(config.smtp_url)
        sender = MailSender(
            store,
            relay,
            config.mail_from,
            first_pause_s=config.mail_retry_s,
            lease_s=config.mail_lease_s,
        )
        jobs.append(Periodic(sender.send_due, MAIL_POLL_S, "waymark-mail"))
        log.info("notices are emailed through the %s", relay.describe())
    for job in jobs:
        job.start()
    return jobs


NOTICE_COUNTS_EVERY_S = 15.0  # a scrape reads the last count: it never waits on the database


def start_metrics(
    config: ServerConfig,
    store: Store,
    stats: ServerStats,
    snapshot: CatalogueSnapshot,
    handshakes: Callable[[], int],
    healthy: Callable[[], bool],
) -> tuple[Metrics | None, list[Periodic]]:
    """Serve /metrics when --metrics-port asks for it; the metrics and the job keeping the
    notice counts, both for the caller to stop."""
    if not config.metrics_port:
        return None, []
    metrics = Metrics()
    counts = {"pending": 0, "failed": 0}

    def count_notices() -> None:
        counts.update(store.mail_counts())

    metrics.gauge("waymark_connections", "Client connections open.", lambda: stats.connections)
    metrics.gauge(
        "waymark_healthy",
        "1 when health says ok (the database answers and, on Galera, the node is ready), else 0.",
        lambda: float(healthy()),
    )
    metrics.gauge("waymark_handshakes_in_progress", "TLS handshakes under way.", handshakes)
    metrics.gauge(
        "waymark_db_connections_in_use",
        "Pooled database connections in use (the pool's size is --pool-size).",
        store.connections_in_use,
    )
    metrics.gauge(
        "waymark_catalogue_snapshot_age_seconds",
        "Age of the in-memory catalogue the reads are answered from.",
        snapshot.age_s,
    )
    metrics.gauge(
        "waymark_notices_pending", "Notices waiting to be emailed.", lambda: counts["pending"]
    )
    metrics.gauge(
        "waymark_notices_failed",
        "Notices that could not be emailed in 24 hours, or were refused.",
        lambda: counts["failed"],
    )
    count_notices()
    # One port per process: worker K of --workers serves its own numbers on the port + K - 1.
    host, port = metrics.serve(config.metrics_host, config.metrics_port + workers.number() - 1)
    log.info("metrics on http://%s:%d/metrics", host, port)
    job = Periodic(count_notices, NOTICE_COUNTS_EVERY_S, "waymark-metrics")
    job.start()
    return metrics, [job]
