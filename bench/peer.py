"""The FastAPI peer: Waymark's walk search and buy over HTTPS, served by uvicorn, for the bench.

    python bench/peer.py --db URL --cert CERT --key KEY [--pool-size 16] [--snapshot]

GET /walks?area=peak runs server.py's search (snapshot.Catalogue.search_walks) and sends the same
JSON. Without --snapshot it loads the walks from the database on every call (Store.walks); with
--snapshot it searches a snapshot.CatalogueSnapshot of the same 1 s freshness as server.py's,
so the two do the same work on the same data.

POST /buy with {"user_id": N, "items": [{"book": 101, "quantity": 1}]} does what server.py's
buy does once the session is known: the same argument check (protocol.validate_args), the books
resolved against the snapshot's guide books (commands_shop), the same transaction
(Store.place_order), the same answer (results.order), and the snapshot dropped afterwards, as
server.py drops its own after every command that changes the catalogue. It logs in no one: the
member is named in the body (the bench makes its members straight in the database).

It listens on 127.0.0.1 on a free port with the server's TLS context (tls.server_context),
prints "peer listening on HOST:PORT" once it serves, and stops on SIGTERM.
One process, one event loop: uvicorn's own choice of loop and HTTP parser (uvloop and httptools
when installed), the sync endpoints in FastAPI's thread pool, as a FastAPI app with a
synchronous database layer is usually run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn  # noqa: E402
from fastapi import Body, FastAPI  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

import results  # noqa: E402
import rules  # noqa: E402
import seed  # noqa: E402
import tls  # noqa: E402
from commands import wire_error  # noqa: E402
from commands_shop import _resolve_guide  # noqa: E402 - the very resolution server.py runs
from db import Store, StoreConfig  # noqa: E402
from engine import PoolConfig  # noqa: E402
from errors import DomainError  # noqa: E402
from protocol import ProtocolError, validate_args  # noqa: E402
from snapshot import Catalogue, CatalogueSnapshot, searchable_walks  # noqa: E402

HOST = "127.0.0.1"
KEEP_ALIVE_S = 600  # longer than any bench stage, so only the client ever closes a connection
log = logging.getLogger("bench.peer")


def make_app(store: Store, use_snapshot: bool = False) -> FastAPI:
    """The app: the walk search, from the database on every call or from the snapshot; and buy."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    snapshot = CatalogueSnapshot(store)  # server.py's own, with its default 1 s freshness

    def catalogue_now() -> Catalogue:
        if use_snapshot:
            return snapshot.current()
        # A catalogue of this call's rows alone: a database round trip per request, as a
        # service without Waymark's one-second snapshot would make.
        return Catalogue(searchable_walks(store.walks()), (), (), (), loaded_at=0.0)

    @app.get("/walks")
    def walks(area: str | None = None, limit: int = 50, offset: int = 0) -> JSONResponse:
        found, total = catalogue_now().search_walks(
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

    @app.post("/buy")
    def buy(body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
        # server.py's do_buy after its session check, step for step (commands_shop.py).
        try:
            try:
                args = validate_args("buy", {"items": body.get("items")})
                books = snapshot.current().guide_books
                requested = rules.merge_quantities(
                    (_resolve_guide(item["book"], books), item["quantity"])
                    for item in args["items"]
                )
                order = store.place_order(int(body["user_id"]), requested, int(time.time()))
            except DomainError as error:
                raise wire_error(error) from None
            finally:
                snapshot.drop()  # buy changes the stock shown: as server.py's Commands.handle
        except ProtocolError as error:
            answer = {"code": error.code, "message": error.message, "details": error.details}
            return JSONResponse(answer, status_code=409)
        return JSONResponse({"order": results.order(order)})

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
    parser.add_argument(
        "--snapshot",
        action="store_true",
        help="search a 1 s snapshot of the catalogue, as server.py does (else the database)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    store = seed.open_store(args.db, StoreConfig(pool=PoolConfig(pool_size=args.pool_size)))

    def server_context(config: uvicorn.Config, default: Any) -> ssl.SSLContext:
        return tls.server_context(args.cert, args.key)  # the very TLS settings server.py uses

    config = uvicorn.Config(
        make_app(store, args.snapshot),
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
