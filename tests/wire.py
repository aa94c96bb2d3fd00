"""Test helpers that speak to a real server: a server.py subprocess and a raw TLS client."""

from __future__ import annotations

import json
import os
import select
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import protocol
import tls

PROJECT_DIR = Path(__file__).resolve().parent.parent
TEST_BCRYPT_COST = 4  # production is 12; test_auth proves that default separately
SOCKET_TIMEOUT_S = 20.0


class ServerProcess:
    """`python server.py` in a subprocess, as a user would start it, on an ephemeral port."""

    def __init__(
        self,
        workdir: Path,
        db_url: str,
        openlibrary_url: str = "http://127.0.0.1:9",
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        cert_dir: Path | None = None,
    ):
        self.workdir = workdir
        self.db_url = db_url
        self.openlibrary_url = openlibrary_url
        self.extra_args = extra_args
        self.extra_env = env or {}
        cert_dir = cert_dir or workdir / "certs"
        self.cafile = cert_dir / "server.crt"
        self.keyfile = cert_dir / "server.key"
        self.host = "127.0.0.1"
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self.log_path = workdir / f"server-{id(self)}.log"

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def command(self, *args: str) -> list[str]:
        """server.py with this server's database, certificate and Open Library."""
        return [
            sys.executable, str(PROJECT_DIR / "server.py"), *args,
            "--db", self.db_url, "--cert", str(self.cafile), "--key", str(self.keyfile),
            "--openlibrary-url", self.openlibrary_url,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        """The server's environment: fast bcrypt for tests, plus any extras."""
        return {
            **os.environ,
            "WAYMARK_BCRYPT_COST": str(TEST_BCRYPT_COST),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def start(self, timeout_s: float = 30.0) -> None:
        """Start and wait for the 'listening on HOST:PORT' line."""
        args = self.command("--host", self.host, "--port", str(self.port), *self.extra_args)
        log_file = self.log_path.open("a")
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.environment(),
            cwd=self.workdir,
        )
        log_file.close()
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if ready:
                line = self.process.stdout.readline()
                if "listening on" in line:
                    self.port = int(line.rsplit(":", 1)[1])
                    return
                if not line and self.process.poll() is not None:
                    break
        raise RuntimeError(f"server.py did not start; its log:\n{self.log()}")

    def log(self) -> str:
        """What the server wrote to stderr."""
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self, sig: int = 15, timeout_s: float = 30.0) -> int | None:
        """Send a signal (SIGTERM by default) and wait; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            if self.process.stdout:
                self.process.stdout.close()

    def restart(self) -> None:
        """Stop, then start again on the same port and database."""
        self.stop()
        self.start()

    def create_admin(self, username: str, password: str) -> None:
        """Run `server.py create-admin` with the password on stdin."""
        subprocess.run(
            self.command("create-admin", username),
            input=password + "\n",
            text=True,
            check=True,
            capture_output=True,
            env=self.environment(),
            timeout=60,
        )

    def client(self, source: str | None = None) -> WireClient:
        """A raw protocol client connected to this server (from another loopback address)."""
        return WireClient(self.host, self.port, self.cafile, source=source)


class WireClient:
    """A minimal TLS client that sends lines and reads response lines, for protocol tests."""

    def __init__(
        self,
        host: str,
        port: int,
        cafile: Path,
        timeout_s: float = SOCKET_TIMEOUT_S,
        source: str | None = None,
    ):
        # source: another loopback address (127.0.0.2, ...) to connect from, as another machine.
        raw = socket.create_connection(
            (host, port), timeout=timeout_s, source_address=(source, 0) if source else None
        )
        self.sock = tls.client_context(cafile).wrap_socket(raw, server_hostname=host)
        self.buffer = b""
        self.next_id = 0

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        """Send bytes exactly as given."""
        self.sock.sendall(data)

    def send(self, cmd: str, **args: Any) -> int:
        """Send one request without waiting; returns its id."""
        self.next_id += 1
        line = json.dumps({"id": self.next_id, "cmd": cmd, "args": args}) + "\n"
        self.send_raw(line.encode())
        return self.next_id

    def read(self) -> dict[str, Any]:
        """The next response line, decoded."""
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        protocol.decode_reply(line)  # every answer must be a response the clients can read
        return json.loads(line)

    def keyed(self, cmd: str, key: str, **args: Any) -> dict[str, Any]:
        """Send one request with an idempotency key and return the whole response."""
        self.next_id += 1
        request = {"id": self.next_id, "cmd": cmd, "args": args, "idempotency_key": key}
        self.send_raw((json.dumps(request) + "\n").encode())
        response = self.read()
        assert response["id"] == self.next_id, response
        return response

    def request(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one request and return the whole response."""
        request_id = self.send(cmd, **args)
        response = self.read()
        assert response["id"] == request_id, response
        return response

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one request and return its result; fail the test on an error."""
        response = self.request(cmd, **args)
        assert response["ok"], response
        return response["result"]

    def error(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one request that must fail; return its error object."""
        response = self.request(cmd, **args)
        assert not response["ok"], response
        return response["error"]

    def closed_by_server(self) -> bool:
        """True if the server has closed this connection."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True


def register_and_login(
    client: WireClient, username: str, password: str = "correct horse"
) -> dict[str, Any]:
    """Register a member and log this connection in; returns the login result."""
    client.call("register", username=username, password=password)
    return client.call("login", username=username, password=password)


def make_cert(directory: Path) -> Path:
    """A different self-signed certificate, for tests of pinning."""
    cert, key = directory / "other.crt", directory / "other.key"
    tls.ensure_certificate(cert, key)
    return cert
