"""HAProxy in front of Waymark servers, for the tests: TCP mode, TLS passed through, health-checked.

Its configuration is deploy/haproxy.cfg, the example shipped to operators, with the bind address
and the server lines replaced and a stats socket added, so the tests run the file people copy.
`haproxy -f FILE -db` runs in the foreground as a child of the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.ports import unused_port
from tests.wire import PROJECT_DIR

DEPLOY_CONFIG = PROJECT_DIR / "deploy" / "haproxy.cfg"
HOST = "127.0.0.1"


class HAProxyError(Exception):
    """HAProxy is missing, refused the configuration or did not come up; the message says which."""


def ensure_haproxy() -> str:
    """The haproxy program, installed with apt-get when missing and we are root."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "haproxy"],
        ):
            subprocess.run(command, env=environment, capture_output=True, timeout=900, check=False)
        found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if found is None:
        raise HAProxyError(
            "The HAProxy tests need haproxy: install it (Debian/Ubuntu: apt-get install haproxy)."
        )
    return found


def configuration(
    template: str, port: int, servers: list[tuple[str, int]], stats_socket: Path
) -> str:
    """template with its bind line on HOST:port, one server line per server, and a stats socket."""
    lines: list[str] = []
    servers_written = False
    for line in template.splitlines():
        indent = line[: len(line) - len(line.lstrip())]
        words = line.split()
        if words[:1] == ["server"]:
            if not servers_written:
                lines += [
                    f"{indent}server waymark{i} {host}:{server_port}"
                    for i, (host, server_port) in enumerate(servers, start=1)
                ]
                servers_written = True
            continue
        if words[:1] == ["bind"]:
            line = f"{indent}bind {HOST}:{port}"
        lines.append(line)
        if words == ["global"]:
            lines.append(f"    stats socket {stats_socket} mode 600 level user")
    if not servers_written:
        raise HAProxyError("The HAProxy template has no server line to replace.")
    return "\n".join(lines) + "\n"


class HAProxy:
    """One haproxy process balancing TLS connections over the given servers."""

    def __init__(self, workdir: Path, servers: list[tuple[str, int]], port: int = 0):
        self.workdir = workdir
        self.servers = servers
        self.port = port
        self.config_path = workdir / "haproxy.cfg"
        self.stats_socket = workdir / "haproxy.sock"
        self.log_path = workdir / "haproxy.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> HAProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 15.0) -> None:
        """Check the configuration, start haproxy and wait until its stats socket answers."""
        program = ensure_haproxy()
        if not self.port:
            self.port = unused_port()
        text = configuration(DEPLOY_CONFIG.read_text(), self.port, self.servers, self.stats_socket)
        self.config_path.write_text(text)
        checked = subprocess.run(
            [program, "-c", "-f", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if checked.returncode != 0:
            raise HAProxyError(
                f"haproxy refused {self.config_path}:\n{checked.stdout}{checked.stderr}"
            )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [program, "-f", str(self.config_path), "-db"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.1)
        raise HAProxyError(f"haproxy did not start; its log:\n{self.log()}")

    def stop(self) -> None:
        """Stop haproxy (SIGTERM) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        """What haproxy wrote, connection log lines included."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stats(self) -> list[dict[str, str]]:
        """`show stat` from the stats socket: one dict per frontend, backend and server."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        header, *rows = [line for line in data.decode().splitlines() if line]
        names = header.lstrip("# ").split(",")
        return [dict(zip(names, row.split(","), strict=False)) for row in rows]

    def server_states(self) -> dict[str, tuple[str, str]]:
        """(status, last check status) of each server, e.g. ("UP", "L7OK") or ("DOWN", "L4CON")."""
        return {
            row["svname"]: (row["status"], row["check_status"])
            for row in self.stats()
            if row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def sessions(self) -> dict[str, int]:
        """How many client connections each server has been given so far."""
        return {
            row["svname"]: int(row["stot"])
            for row in self.stats()
            if row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_for(
        self, wanted: dict[str, str], timeout_s: float = 15.0
    ) -> dict[str, tuple[str, str]]:
        """Wait until each named server has the wanted status ("UP" or "DOWN"), checked by a probe.

        A server counts as UP only once a health check has passed (L7OK), not merely because
        HAProxy starts servers as UP before it has checked them.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            states = self.server_states()
            if all(
                states.get(name, ("", ""))[0] == status
                and (status != "UP" or states[name][1] == "L7OK")
                for name, status in wanted.items()
            ):
                return states
            if time.monotonic() > deadline:
                raise HAProxyError(f"HAProxy's servers are {states}, not {wanted}")
            time.sleep(0.1)
