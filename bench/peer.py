"""The FastAPI peer: Waymark's walk search over HTTPS, served by uvicorn, for the bench.

    python bench/peer.py --db URL --cert CERT --key KEY [--pool-size 16]

GET /walks?area=peak loads the walks from the database on every call (Store.walks) and runs
server.py's search over them (snapshot.Catalogue.search_walks), sending the same JSON. It
listens on 127.0.0.1 on a free port with the server's TLS context (tls.server_context), prints "peer listening on HOST:PORT" once it serves, and stops on SIGTERM.
One process, one event loop: uvicorn's own choice of loop and HTTP parser (uvloop and httptools
when installed), the sync endpoint in FastAPI's thread pool, as a FastAPI app with a
synchronous database layer is usually run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

import rules  # noqa: E402
import seed  # noqa: E402
import tls  # noqa: E402
from db import Store, StoreConfig  # noqa: E402
from engine import PoolConfig  # noqa: E402
from snapshot import Catalogue, searchable_walks  # noqa: E402

HOST = "127.0.0.1"
KEEP_ALIVE_S = 600  # longer than any bench stage, so only the client ever closes a connection
log = logging.getLogger("bench.peer")


def make_app(store: Store) -> FastAPI:
    """The app: one route, the walk search."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/walks")
    def walks(area: str | None = None, limit: int = 50, offset: int = 0) -> JSONResponse:
        # A catalogue of this call's rows alone: a database round trip per request, as a
        # service without Waymark's one-second snapshot would make.
        catalogue = Catalogue(searchable_walks(store.walks()), (), (), (), loaded_at=0.0)
        found, total = catalogue.search_walks(
            area_key=rules.match_key(area) if area else None,
            low=None,
            high=None,
            difficulty=None,
            limit=limit,
            offset=offset,
        )
        # JSONResponse renders with json.dumps, as server.py does; a response model would add
        # pydantic validation that Waymark does not do.
        return JSONResponse({"walks": found, "total": total})

    return app


class PeerServer(uvicorn.Server):
    """uvicorn, saying on stdout when it serves, as bench.harness.Service waits for."""

    def __init__(self, config: uvicorn.Config, listener: socket.socket):
        super().__init__(config)
        self.listener = listener

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        protocol = self.config.http_protocol_class.__name__
        loop = type(asyncio.get_running_loop()).__module__
        log.warning("peer runs uvicorn %s with %s on %s", uvicorn.__version__, protocol, loop)
        host, port = self.listener.getsockname()[:2]
        print(f"peer listening on {host}:{port}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--pool-size", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    store = seed.open_store(args.db, StoreConfig(pool=PoolConfig(pool_size=args.pool_size)))

    def server_context(config: uvicorn.Config, default: Any) -> ssl.SSLContext:
        return tls.server_context(args.cert, args.key)  # the very TLS settings server.py uses

    config = uvicorn.Config(
        make_app(store),
        ssl_context_factory=server_context,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=5,
        access_log=False,
        log_level="warning",
        lifespan="off",
    )
    listener = socket.create_server((HOST, 0), backlog=1024)
    try:
        PeerServer(config, listener).run(sockets=[listener])
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
