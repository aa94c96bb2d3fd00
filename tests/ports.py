"""Loopback ports for the tests' own servers, chosen where the kernel never picks by itself."""

from __future__ import annotations

import random
import socket
from pathlib import Path

HOST = "127.0.0.1"
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_EPHEMERAL_START = 32_768
LOWEST = 10_000
TRIES = 1_000


def _ephemeral_start() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return LINUX_EPHEMERAL_START


def unused_ports(count: int) -> list[int]:
    """Distinct loopback ports that nothing holds just now, below the ephemeral range.

    A port the kernel gave for port 0 stays free only until the next bind to port 0 or the next
    outgoing connection is given it, so a test that frees such a port and passes its number on
    loses it now and then to the server it starts (say, the main listener taking the metrics
    port). Below the ephemeral range a port is taken only by a program that names it.
    """
    top = max(_ephemeral_start(), LOWEST + TRIES)
    chooser = random.SystemRandom()
    found: list[int] = []
    for _ in range(TRIES):
        port = chooser.randrange(LOWEST, top)
        if port in found:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"found only {len(found)} of {count} free ports in {TRIES} tries")


def unused_port() -> int:
    """One loopback port that nothing holds just now (see unused_ports)."""
    return unused_ports(1)[0]
