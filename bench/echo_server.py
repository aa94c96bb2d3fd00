"""A bare TLS line-echo server: Waymark's transport without the application, for bench/load.py.

    python bench/echo_server.py --cert CERT --key KEY

It uses the server's own TLS context (tls.server_context), listens on 127.0.0.1 on a free port,
prints "echo listening on HOST:PORT", and runs until it is sent SIGTERM. Like server.py it gives
each connection its own thread and answers each line with one sendall(), but it does nothing
else: no JSON, no timeouts, no database.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tls  # noqa: E402

HOST = "127.0.0.1"


def echo_lines(context: ssl.SSLContext, raw: socket.socket) -> None:
    """Handshake, then send every complete line straight back until the client leaves."""
    try:
        with context.wrap_socket(raw, server_side=True) as sock:
            pending = b""
            while data := sock.recv(65536):
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    sock.sendall(line + b"\n")
    except OSError:  # ssl.SSLError included: the client went away mid-line
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    args = parser.parse_args(argv)
    context = tls.server_context(args.cert, args.key)
    listener = socket.create_server((HOST, 0), backlog=1024)
    host, port = listener.getsockname()[:2]
    print(f"echo listening on {host}:{port}", flush=True)
    while True:
        raw, _ = listener.accept()
        threading.Thread(target=echo_lines, args=(context, raw), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
