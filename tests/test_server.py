"""The server end to end over real TLS on 127.0.0.1: framing, limits, certificates, shutdown."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

import tls
from tests.fake_openlibrary import FakeOpenLibrary
from tests.wire import PROJECT_DIR, ServerProcess, WireClient, make_cert, register_and_login


def openssl_connects(server: ServerProcess, *options: str) -> bool:
    """True if `openssl s_client` with these options completes a verified handshake."""
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"{server.host}:{server.port}", *options,
         "-CAfile", str(server.cafile), "-verify_return_error"],
        input=b"", capture_output=True, timeout=20,
    )  # fmt: skip
    return result.returncode == 0


def start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
    process = ServerProcess(
        tmp_path, db_url=f"sqlite:///{tmp_path / 'w.db'}", extra_args=args, env=env
    )
    process.start()
    return process


def says_hello_once_the_slots_are_free(process: ServerProcess, within_s: float = 10.0) -> None:
    """A closed connection's slot is counted back when the server sees it close, a moment later;
    waiting a fixed time for that would fail now and then on a busy machine."""
    deadline = time.monotonic() + within_s
    while True:
        with process.client() as again:
            again.send("hello")
            answer = again.read()
        if answer["ok"]:
            return
        assert answer["error"]["code"] == "server_busy", answer
        assert time.monotonic() < deadline, "the freed slots were never counted back"
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used so far (user and system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_hello_answers_with_the_protocol_version(server: ServerProcess) -> None:
    with server.client() as client:
        assert client.call("hello") == {"server": "waymark", "version": "1.0.0", "protocol": 1}


def test_the_server_sends_nothing_unprompted(server: ServerProcess) -> None:
    with server.client() as client:
        client.sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            client.sock.recv(1)


def test_ids_are_echoed_and_null_when_absent(server: ServerProcess) -> None:
    with server.client() as client:
        client.send_raw(
            b'{"cmd": "hello", "id": "abc"}\n{"cmd": "hello"}\n{"cmd":"hello","id":2.5}\n'
        )
        assert [client.read()["id"] for _ in range(3)] == ["abc", None, 2.5]


def test_pipelined_requests_are_answered_in_order(server: ServerProcess) -> None:
    with server.client() as client:
        lines = []
        for number in range(40):
            cmd = ["hello", "list_areas", "catalogue", "nonsense"][number % 4]
            lines.append(json.dumps({"id": number, "cmd": cmd}))
        client.send_raw(("\n".join(lines) + "\n").encode())
        responses = [client.read() for _ in range(40)]
    assert [r["id"] for r in responses] == list(range(40))
    assert [r["ok"] for r in responses[:4]] == [True, True, True, False]
    assert responses[3]["error"]["code"] == "unknown_command"


def test_a_request_split_across_many_writes_is_still_one_request(server: ServerProcess) -> None:
    with server.client() as client:
        for byte in b'{"id": 1, "cmd": "hello"}\n':
            client.send_raw(bytes([byte]))
        assert client.read()["ok"] is True


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"\xff\xfe\xfd",
        b"[1,2,3]",
        b"42",
        b'{"args": {}}',
        b'{"cmd": "hello", "args": 5}',
    ],
)
def test_malformed_lines_get_bad_request_and_the_connection_stays_open(
    server: ServerProcess, line: bytes
) -> None:
    with server.client() as client:
        client.send_raw(line + b"\n")
        response = client.read()
        assert response["ok"] is False
        assert response["error"]["code"] == "bad_request"
        assert response["error"]["message"].endswith(".")
        assert client.call("hello")["protocol"] == 1


def test_a_line_too_long_gets_an_error_then_the_connection_closes(server: ServerProcess) -> None:
    with server.client() as client:
        client.send_raw(b'{"cmd": "hello", "pad": "' + b"x" * 70_000 + b'"}\n')
        response = client.read()
        assert response["error"]["code"] == "line_too_long"
        assert response["id"] is None
        assert client.closed_by_server()


@pytest.mark.parametrize("size", [100_000, 1_000_000])
def test_the_line_too_long_error_arrives_even_with_more_input_pending(
    server: ServerProcess, size: int
) -> None:
    with server.client() as client:
        client.send_raw(b"x" * size + b'\n{"cmd": "hello"}\n')
        assert client.read()["error"]["code"] == "line_too_long"


def test_a_line_of_exactly_the_limit_is_accepted(server: ServerProcess) -> None:
    head, tail = b'{"cmd": "hello", "pad": "', b'"}'
    line = head + b"x" * (65_536 - len(head) - len(tail)) + tail
    assert len(line) == 65_536
    with server.client() as client:
        client.send_raw(line + b"\n")
        assert client.read()["ok"] is True


@pytest.mark.parametrize(
    ("args", "env"), [(("--max-line-bytes", "100"), {}), ((), {"WAYMARK_MAX_LINE_BYTES": "100"})]
)
def test_the_line_limit_is_configurable_by_option_or_environment(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    db = f"sqlite:///{tmp_path / 'w.db'}"
    with ServerProcess(tmp_path, db_url=db, extra_args=args, env=env) as process:
        with process.client() as client:
            client.send_raw(b'{"cmd": "hello", "pad": "' + b"x" * 100 + b'"}\n')
            assert client.read()["error"]["code"] == "line_too_long"


def test_a_plaintext_client_gets_no_json(server: ServerProcess) -> None:
    with socket.create_connection((server.host, server.port), timeout=5) as raw:
        raw.sendall(b'{"cmd": "hello"}\n')
        received = b""
        try:
            while chunk := raw.recv(4096):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert b'"ok"' not in received and b"{" not in received


def test_a_client_refuses_a_server_whose_certificate_is_not_the_pinned_one(
    server: ServerProcess, tmp_path: Path
) -> None:
    other = make_cert(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        WireClient(server.host, server.port, other)


def test_the_client_checks_the_hostname(server: ServerProcess) -> None:
    context = tls.client_context(server.cafile)
    with socket.create_connection((server.host, server.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(raw, server_hostname="waymark.example.org")


@pytest.mark.parametrize(
    ("version", "accepted"), [("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)]
)
def test_tls_1_2_is_the_minimum(server: ServerProcess, version: str, accepted: bool) -> None:
    # SECLEVEL=0 lets this client offer TLS 1.1 at all. The system's OpenSSL policy may refuse
    # it too, so this alone cannot tell; the test below checks our own contexts.
    assert openssl_connects(server, version, "-cipher", "DEFAULT@SECLEVEL=0") is accepted


def test_both_contexts_set_tls_1_2_as_their_own_minimum(server: ServerProcess) -> None:
    contexts = [
        tls.server_context(server.cafile, server.keyfile),
        tls.client_context(server.cafile),
    ]
    assert [c.minimum_version for c in contexts] == [ssl.TLSVersion.TLSv1_2] * 2
    # Not "whatever OpenSSL allows": no context may reach below TLS 1.2 once the policy changes.
    assert all(
        c.maximum_version in (ssl.TLSVersion.MAXIMUM_SUPPORTED, ssl.TLSVersion.TLSv1_3)
        for c in contexts
    )


def test_tls_1_2_uses_only_ecdhe_aead_suites(server: ServerProcess) -> None:
    context = tls.client_context(server.cafile)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((server.host, server.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            name, version, _ = sock.cipher()
    assert version == "TLSv1.2"
    assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name)
    cbc_only = tls.client_context(server.cafile)
    cbc_only.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc_only.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:AES128-SHA")
    with socket.create_connection((server.host, server.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            cbc_only.wrap_socket(raw, server_hostname="localhost")


@pytest.mark.parametrize(
    ("group", "accepted"),
    [("X25519", True), ("P-256", True), ("P-384", True), ("P-521", False), ("X448", False)],
)
def test_key_exchange_is_limited_to_x25519_p256_and_p384(
    server: ServerProcess, group: str, accepted: bool
) -> None:
    assert openssl_connects(server, "-groups", group) is accepted


def test_the_generated_certificate_is_a_pinnable_leaf(server: ServerProcess) -> None:
    cert = x509.load_pem_x509_certificate(server.cafile.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert stat.S_IMODE(os.stat(server.keyfile).st_mode) == 0o600


def test_an_existing_certificate_is_kept_across_restarts(server: ServerProcess) -> None:
    before = server.cafile.read_bytes()
    server.restart()
    assert server.cafile.read_bytes() == before
    with server.client() as client:
        assert client.call("hello")


def test_300_connections_that_never_start_tls_do_not_delay_a_new_client(
    server: ServerProcess,
) -> None:
    silent = [socket.create_connection((server.host, server.port), timeout=5) for _ in range(300)]
    try:
        started = time.monotonic()
        with server.client() as client:
            client.call("hello")
        assert time.monotonic() - started < 1.0
    finally:
        for sock in silent:
            sock.close()


def test_a_handshake_that_never_comes_is_dropped_after_the_timeout(tmp_path: Path) -> None:
    process = start(tmp_path, "--handshake-timeout-s", "1")
    try:
        with socket.create_connection((process.host, process.port), timeout=10) as raw:
            started = time.monotonic()
            assert raw.recv(1) == b""
            assert time.monotonic() - started < 5
    finally:
        process.stop()


def test_an_idle_connection_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    process = start(tmp_path, "--idle-timeout-s", "1")
    try:
        with process.client() as client:
            client.call("hello")
            started = time.monotonic()
            assert client.closed_by_server()
            assert 0.5 < time.monotonic() - started < 5
    finally:
        process.stop()


def test_past_the_connection_limit_a_client_gets_server_busy_then_close(tmp_path: Path) -> None:
    process = start(tmp_path, "--max-connections", "2")
    try:
        with process.client() as first, process.client() as second:
            first.call("hello")
            second.call("hello")
            with process.client() as third:
                response = third.read()
                assert response["error"]["code"] == "server_busy"
                assert third.closed_by_server()
        says_hello_once_the_slots_are_free(process)
    finally:
        process.stop()


def test_sigterm_answers_the_request_in_flight_and_exits_0(tmp_path: Path) -> None:
    # Cost 14 makes one register take about a second: long enough to be in flight.
    process = start(tmp_path, env={"WAYMARK_BCRYPT_COST": "14"})
    assert process.process is not None
    with process.client() as client:
        idle_cpu = cpu_seconds(process.process.pid)
        request_id = client.send("register", username="slowpoke", password="long enough")
        # In flight once the server has spent a fifth of a second hashing: measured, not slept,
        # since a busy machine can delay the request past any fixed pause.
        deadline = time.monotonic() + 30
        while cpu_seconds(process.process.pid) - idle_cpu < 0.2:
            assert time.monotonic() < deadline, "the register never started"
            time.sleep(0.02)
        process.process.terminate()
        response = client.read()
        assert response == {
            "id": request_id,
            "ok": True,
            "result": {"user": {"id": 1, "username": "slowpoke"}},
        }
    assert process.stop() == 0
    assert "received SIGTERM" in process.log()


def test_sigint_also_stops_cleanly(server: ServerProcess) -> None:
    assert server.stop(sig=2) == 0


def test_an_internal_fault_gets_a_reference_not_a_traceback(
    tmp_path: Path, mysql_url: str, openlibrary_fake: FakeOpenLibrary
) -> None:
    import urllib.parse

    import mysql.connector

    process = ServerProcess(tmp_path, db_url=mysql_url, openlibrary_url=openlibrary_fake.url)
    process.start()
    parts = urllib.parse.urlsplit(mysql_url)
    admin = mysql.connector.connect(
        host=parts.hostname, port=parts.port, user="root", autocommit=True
    )
    try:
        with process.client() as client:
            register_and_login(client, "victim")
            # A real fault under the server: its table disappears.
            admin.cursor().execute(
                f"RENAME TABLE {parts.path[1:]}.orders TO {parts.path[1:]}.orders_gone"
            )
            try:
                error = client.error("orders")
            finally:
                admin.cursor().execute(
                    f"RENAME TABLE {parts.path[1:]}.orders_gone TO {parts.path[1:]}.orders"
                )
            assert error["code"] == "internal"
            assert "Traceback" not in json.dumps(error) and "orders_gone" not in error["message"]
            reference = error["details"]["request_id"]
            assert reference in error["message"]
            assert client.call("orders") == {"orders": []}  # same connection, still served
        assert reference in process.log() and "Traceback" in process.log()
    finally:
        admin.close()
        process.stop()


def test_help_reads_well() -> None:
    result = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "server.py"), "--help"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    for option in (
        "--host",
        "--port",
        "--db",
        "--cert",
        "--key",
        "--openlibrary-url",
        "create-admin",
    ):
        assert option in result.stdout
    assert "WAYMARK_PORT" in result.stdout
    help_text = " ".join(result.stdout.split())  # argparse wraps lines anywhere
    for option, variable, default in (
        ("--line-timeout-s", "WAYMARK_LINE_TIMEOUT_S", "10.0"),
        ("--max-handshakes", "WAYMARK_MAX_HANDSHAKES", "128"),
        ("--max-connections-per-address", "WAYMARK_MAX_CONNECTIONS_PER_ADDRESS", "0"),
        ("--write-timeout-s", "WAYMARK_WRITE_TIMEOUT_S", "30.0"),
    ):
        assert option in help_text and f"[{variable}; default {default}]" in help_text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--port", "seventy"), "--port must be a whole number of 0 or more, not 'seventy'."),
        (("--max-active-loans", "-1"), "--max-active-loans must be a whole number of 0 or more"),
    ],
)
def test_a_bad_option_value_is_a_usage_error(args: tuple[str, ...], message: str) -> None:
    result = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "server.py"), *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr


def test_an_id_past_any_double_is_answered_and_so_is_everything_after_it(
    server: ServerProcess,
) -> None:
    with server.client() as client:
        client.send_raw(
            b'{"id": 1' + b"0" * 309 + b', "cmd": "hello"}\n{"id": 2, "cmd": "hello"}\n'
        )
        refused, after = client.read(), client.read()
    assert (refused["id"], refused["error"]["code"]) == (None, "bad_request")
    assert (after["id"], after["ok"]) == (2, True)


@pytest.mark.parametrize("argument", ["min_distance", "max_distance"])
def test_a_distance_past_any_double_is_a_bad_request_naming_it(
    server: ServerProcess, argument: str
) -> None:
    with server.client() as client:
        client.send_raw(
            b'{"id": 3, "cmd": "search_walks", "args": {"%s": 1%s}}\n'
            % (argument.encode(), b"0" * 309)
        )
        error = client.read()["error"]
        assert error["code"] == "bad_request" and f"'{argument}'" in error["message"]
        assert client.call("hello")


def test_an_unpaired_surrogate_in_an_argument_keeps_the_id(server: ServerProcess) -> None:
    with server.client() as client:
        client.send_raw(b'{"id": 7, "cmd": "search_walks", "args": {"area": "\\ud800"}}\n')
        response = client.read()
    assert (response["id"], response["error"]["code"]) == (7, "bad_request")


def silent_sockets(server: ServerProcess, count: int) -> list[socket.socket]:
    """count TCP connections that never start TLS."""
    return [socket.create_connection((server.host, server.port), timeout=5) for _ in range(count)]


def test_silent_sockets_past_the_handshake_budget_do_not_starve_real_clients(
    tmp_path: Path,
) -> None:
    # They used to take connection slots while they waited: with 1,100 of them every real
    # client was dropped at once. Now they share the handshake budget and the oldest go.
    process = start(tmp_path, "--max-connections", "64", env={"WAYMARK_MAX_HANDSHAKES": "32"})
    silent = silent_sockets(process, 400)
    try:
        for _ in range(5):
            started = time.monotonic()
            with process.client() as client:
                assert client.call("hello")["protocol"] == 1
            assert time.monotonic() - started < 1.0
    finally:
        for sock in silent:
            sock.close()
        process.stop()


def test_every_client_past_the_connection_cap_hears_server_busy(tmp_path: Path) -> None:
    process = start(tmp_path, "--max-connections", "1")
    answers: list[str] = []

    def knock() -> None:
        try:
            with process.client() as client:
                answers.append(client.read()["error"]["code"])
        except (OSError, ssl.SSLError) as error:
            answers.append(type(error).__name__)

    try:
        with process.client() as holder:
            holder.call("hello")
            knockers = [threading.Thread(target=knock) for _ in range(48)]
            for thread in knockers:
                thread.start()
            for thread in knockers:
                thread.join(timeout=30)
        assert answers == ["server_busy"] * 48
    finally:
        process.stop()


def test_one_address_may_hold_only_so_many_connections(tmp_path: Path) -> None:
    process = start(tmp_path, "--max-connections-per-address", "2")
    try:
        with process.client() as first, process.client() as second:
            first.call("hello")
            second.call("hello")
            with process.client() as third:
                error = third.read()["error"]
                assert (error["code"], error["details"]) == (
                    "server_busy",
                    {"scope": "address", "limit": 2},
                )
        says_hello_once_the_slots_are_free(process)
    finally:
        process.stop()


def test_a_client_hello_trickled_byte_by_byte_gets_one_handshake_timeout_in_all(
    tmp_path: Path,
) -> None:
    process = start(tmp_path, "--handshake-timeout-s", "1")
    outgoing = ssl.MemoryBIO()
    tls_object = tls.client_context(process.cafile).wrap_bio(
        ssl.MemoryBIO(), outgoing, server_hostname="localhost"
    )
    with pytest.raises(ssl.SSLWantReadError):
        tls_object.do_handshake()
    client_hello = outgoing.read()
    try:
        with socket.create_connection((process.host, process.port), timeout=0.2) as raw:
            started = time.monotonic()
            with pytest.raises(OSError):  # reset, or a clean close seen as EOF below
                for byte in client_hello:
                    raw.sendall(bytes([byte]))
                    with contextlib.suppress(TimeoutError):
                        if raw.recv(1) == b"":
                            raise ConnectionResetError("closed by the server")
            assert time.monotonic() - started < 3
    finally:
        process.stop()


def test_the_generated_certificate_lasts_at_most_365_days(server: ServerProcess) -> None:
    cert = x509.load_pem_x509_certificate(server.cafile.read_bytes())
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= datetime.timedelta(days=365, minutes=5)  # 5 minutes back-dated for skew
    assert "expire" not in server.log()


def test_a_certificate_near_its_end_is_warned_about_at_start(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    tls.ensure_certificate(certs / "server.crt", certs / "server.key", datetime.timedelta(days=20))
    db = f"sqlite:///{tmp_path / 'w.db'}"
    with ServerProcess(tmp_path, db_url=db, cert_dir=certs) as process:
        with process.client() as client:
            assert client.call("hello")
    assert "WARNING" in process.log() and "expires in 19 days" in process.log()


def test_a_client_may_pin_the_old_and_the_new_certificate_while_they_change_over(
    server: ServerProcess, tmp_path: Path
) -> None:
    # README's renewal: clients get a file holding both, so the switch needs no flag day.
    bundle = tmp_path / "pins.crt"
    bundle.write_bytes(make_cert(tmp_path / "next").read_bytes() + server.cafile.read_bytes())
    with WireClient(server.host, server.port, bundle) as client:
        assert client.call("hello")


STOP_ROUNDS = int(os.environ.get("WAYMARK_STOP_ROUNDS", "12"))


def _flood(address: tuple[str, int], flooding: threading.Event) -> None:
    """Open connections that send three bytes of a ClientHello and then nothing, until told."""
    while flooding.is_set():
        with contextlib.suppress(OSError), socket.create_connection(address, timeout=1) as raw:
            raw.sendall(b"\x16\x03\x01")
            time.sleep(0.001)


def test_a_stop_never_hangs_while_the_accept_loop_cuts_handshakes(tmp_path: Path) -> None:
    """Issue 18's reproduction: SIGTERM during a flood of unfinished handshakes, many times.

    The old handler took the server's lock from the signal handler; when the signal landed while
    the main thread held that lock (cutting a handshake), the server never exited. With two
    handshake slots every accept cuts one under the lock, so the window is wide.
    """
    process = start(tmp_path, "--handshake-timeout-s", "1", "--max-handshakes", "2")
    try:
        for round_number in range(STOP_ROUNDS):
            flooding = threading.Event()
            flooding.set()
            address = (process.host, process.port)
            flooders = [
                threading.Thread(target=_flood, args=(address, flooding), daemon=True)
                for _ in range(4)
            ]
            for thread in flooders:
                thread.start()
            time.sleep(0.3 + 0.05 * (round_number % 7))  # land the signal at different moments
            try:
                assert process.stop(timeout_s=10) == 0, f"round {round_number}"
            finally:
                flooding.clear()
                for thread in flooders:
                    thread.join(timeout=5)
            if round_number + 1 < STOP_ROUNDS:
                process = start(tmp_path, "--handshake-timeout-s", "1", "--max-handshakes", "2")
    finally:
        with contextlib.suppress(Exception):
            process.stop(timeout_s=1)
