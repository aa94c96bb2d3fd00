"""A fixed set of daemon threads running jobs from one queue: the server's request workers.

Not concurrent.futures: its threads are joined when the interpreter exits, so a job stuck on a
database that stopped answering would hold a stopping server for ever. These threads are daemons,
and nobody waits on a job's result: each job hands its connection back itself.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("waymark.server")


class ThreadPool:
    """`size` daemon threads named `name`-N, each running submitted jobs one at a time."""

    def __init__(self, name: str, size: int):
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{n}", daemon=True)
            for n in range(1, size + 1)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        """Run job on the next free thread; jobs start in the order they were submitted."""
        self._jobs.put(job)

    def stop(self) -> None:
        """Let each thread finish its job and end; waits for none of them."""
        for _ in self._threads:
            self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:  # noqa: BLE001 - a job's fault must never cost the pool a thread
                log.exception("a request worker's job failed")
