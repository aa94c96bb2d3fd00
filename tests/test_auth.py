"""Accounts through the real protocol on both backends: register, login, resume, logout, throttling."""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import mysql.connector
import pytest

import passwords
import seed
from commands import Commands, Session
from protocol import ProtocolError, Request
from settings import ServerConfig
from tests.test_shop import race
from tests.wire import ServerProcess, WireClient, register_and_login

PASSWORD = "correct horse"


def test_register_then_login_then_whoami(backend_server: ServerProcess) -> None:
    with backend_server.client() as client:
        registered = client.call("register", username="Walker_1", password=PASSWORD)
        assert registered == {"user": {"id": registered["user"]["id"], "username": "Walker_1"}}
        assert client.error("whoami")["code"] == "unauthorized"  # registering does not log in
        login = client.call("login", username="walker_1", password=PASSWORD)
        assert login["user"] == {
            "id": registered["user"]["id"],
            "username": "Walker_1",
            "role": "member",
            "email": None,  # PROTOCOL.md 1.2: login and whoami carry the email, null when none
        }
        assert client.call("whoami")["user"]["username"] == "Walker_1"


def test_usernames_are_unique_ignoring_case(backend_server: ServerProcess) -> None:
    with backend_server.client() as client:
        client.call("register", username="Ann", password=PASSWORD)
        error = client.error("register", username="ANN", password=PASSWORD)
        assert error["code"] == "username_taken"


@pytest.mark.parametrize(
    "username", ["ab", "x" * 33, "has space", "semi;colon", "O'Brien", "émile", "", "a\nb"]
)
def test_bad_usernames_are_refused(server: ServerProcess, username: str) -> None:
    with server.client() as client:
        error = client.error("register", username=username, password=PASSWORD)
        assert error["code"] == "bad_request" and "username" in error["message"]


@pytest.mark.parametrize("password", ["short", "1234567", "        ", ""])
def test_weak_passwords_are_refused(server: ServerProcess, password: str) -> None:
    with server.client() as client:
        assert (
            client.error("register", username="ann", password=password)["code"] == "weak_password"
        )


def test_passwords_over_72_bytes_are_fully_supported_never_truncated(
    backend_server: ServerProcess,
) -> None:
    long_password = "ü" * 50 + "tail-A"  # 106 bytes of UTF-8
    with backend_server.client() as client:
        client.call("register", username="longpass", password=long_password)
        error = client.error("login", username="longpass", password="ü" * 50 + "tail-B")
        assert error["code"] == "invalid_credentials"
        assert client.call("login", username="longpass", password=long_password)["token"]


def test_login_failure_is_the_same_whether_or_not_the_user_exists(server: ServerProcess) -> None:
    with server.client() as client:
        client.call("register", username="real", password=PASSWORD)
        wrong_password = client.error("login", username="real", password="not the one")
        no_such_user = client.error("login", username="ghost", password="not the one")
        assert wrong_password == no_such_user
        assert wrong_password["code"] == "invalid_credentials"


def test_failed_logins_are_throttled_per_username(backend_server: ServerProcess) -> None:
    with backend_server.client() as client:
        client.call("register", username="target", password=PASSWORD)
        for _ in range(5):
            assert (
                client.error("login", username="target", password="guess")["code"]
                == "invalid_credentials"
            )
        error = client.error("login", username="TARGET", password=PASSWORD)
        assert error["code"] == "rate_limited"
        assert 0 < error["details"]["retry_after_s"] <= 15 * 60
        # Other users (same address) are not locked out by one username's failures.
        client.call("register", username="bystander", password=PASSWORD)
        assert client.call("login", username="bystander", password=PASSWORD)["token"]


def test_parallel_guesses_cannot_slip_past_the_throttle(backend_server: ServerProcess) -> None:
    import threading

    with backend_server.client() as client:
        client.call("register", username="besieged", password=PASSWORD)
    clients = [backend_server.client() for _ in range(20)]
    barrier = threading.Barrier(len(clients))
    codes: list[str] = []

    def guess(client: WireClient) -> None:
        barrier.wait()
        codes.append(client.error("login", username="besieged", password="guess")["code"])

    threads = [threading.Thread(target=guess, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for client in clients:
        client.close()
    assert len(codes) == 20
    assert codes.count("invalid_credentials") <= 5
    assert set(codes) <= {"invalid_credentials", "rate_limited"}


def test_unknown_usernames_are_throttled_the_same_way(server: ServerProcess) -> None:
    with server.client() as client:
        answers = [client.error("login", username="nobody", password="guess") for _ in range(5)]
        known = client.call("register", username="somebody", password=PASSWORD)
        assert known["user"]["username"] == "somebody"
        wrong = client.error("login", username="somebody", password="guess")
        # The same answer a known name gets, five times, and then the same throttle.
        assert answers == [wrong] * 5
        assert client.error("login", username="nobody", password="guess")["code"] == "rate_limited"


def test_a_success_clears_the_failure_count(server: ServerProcess) -> None:
    with server.client() as client:
        client.call("register", username="forgetful", password=PASSWORD)
        for _ in range(4):
            client.error("login", username="forgetful", password="guess")
        client.call("login", username="forgetful", password=PASSWORD)
        for _ in range(4):
            assert (
                client.error("login", username="forgetful", password="guess")["code"]
                == "invalid_credentials"
            )


def test_resume_on_a_new_connection_and_logout_ends_the_token(
    backend_server: ServerProcess,
) -> None:
    with backend_server.client() as first:
        login = register_and_login(first, "resumer")
        token = login["token"]
        assert len(token) >= 43  # 256 bits, URL-safe base64
        with backend_server.client() as second:
            assert second.call("resume", token=token)["user"] == login["user"]
            assert second.call("whoami")["user"]["username"] == "resumer"
            assert second.call("logout") == {}
            assert second.error("whoami")["code"] == "unauthorized"
        with backend_server.client() as third:
            assert third.error("resume", token=token)["code"] == "unauthorized"
        # The first connection used the same token: the logout ended it there too.
        assert first.error("whoami")["code"] == "unauthorized"


def test_a_token_works_on_another_server_process_sharing_the_database(
    two_mysql_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    first, second = two_mysql_servers
    with first.client() as client:
        token = register_and_login(client, "roamer")["token"]
    with second.client() as client:
        assert client.call("resume", token=token)["user"]["username"] == "roamer"


def test_sessions_expire(tmp_path: Path) -> None:
    process = ServerProcess(
        tmp_path, db_url=f"sqlite:///{tmp_path / 'w.db'}", extra_args=("--session-ttl-s", "1")
    )
    process.start()
    try:
        with process.client() as client:
            token = register_and_login(client, "brief")["token"]
            time.sleep(1.5)
            assert client.error("orders")["code"] == "unauthorized"
        with process.client() as client:
            assert client.error("resume", token=token)["code"] == "unauthorized"
    finally:
        process.stop()


def test_tokens_are_stored_only_as_hashes(mysql_url: str, tmp_path: Path) -> None:
    process = ServerProcess(tmp_path, db_url=mysql_url)
    process.start()
    try:
        with process.client() as client:
            token = register_and_login(client, "hashed")["token"]
    finally:
        process.stop()
    connection = mysql.connector.connect(
        host="127.0.0.1", port=int(re.search(r":(\d+)/", mysql_url).group(1)),  # type: ignore[union-attr]
        user="root", database=mysql_url.rsplit("/", 1)[1],
    )  # fmt: skip
    cursor = connection.cursor()
    cursor.execute("SELECT token_hash FROM sessions")
    stored = [row[0] for row in cursor.fetchall()]
    connection.close()
    assert stored == [hashlib.sha256(token.encode()).hexdigest()]


def test_commands_that_need_login_say_so(server: ServerProcess) -> None:
    with server.client() as client:
        for cmd in (
            "logout",
            "buy",
            "orders",
            "borrow",
            "return",
            "renew",
            "history",
            "hold",
            "holds",
            "cancel_hold",
            "restock",
            "add_book",
        ):
            assert client.error(cmd)["code"] == "unauthorized", cmd


def test_admin_commands_are_forbidden_to_members(server: ServerProcess) -> None:
    with server.client() as client:
        register_and_login(client, "member")
        assert client.error("restock", book=101, quantity=1)["code"] == "forbidden"
        assert client.error("add_book", key="/works/OL45804W", copies=1)["code"] == "forbidden"
        assert client.error("backorders")["code"] == "forbidden"


def test_create_admin_creates_then_promotes(server: ServerProcess) -> None:
    server.create_admin("boss", "admin password")
    with server.client() as client:
        assert (
            client.call("login", username="boss", password="admin password")["user"]["role"]
            == "admin"
        )
        client.call("register", username="riser", password=PASSWORD)
    server.create_admin("riser", "new admin password")
    with server.client() as client:
        assert (
            client.call("login", username="riser", password="new admin password")["user"]["role"]
            == "admin"
        )


def test_no_password_or_token_reaches_the_log(tmp_path: Path) -> None:
    process = ServerProcess(
        tmp_path, db_url=f"sqlite:///{tmp_path / 'w.db'}", env={"WAYMARK_LOG_LEVEL": "DEBUG"}
    )
    process.start()
    try:
        with process.client() as client:
            secret = "a-very-distinctive-secret"
            token = register_and_login(client, "quiet", password=secret)["token"]
            client.error("login", username="quiet", password=secret + "x")
            new_secret = "another-distinctive-secret"
            client.error("change_password", old_password=secret + "y", new_password=new_secret)
            new_token = client.call(
                "change_password", old_password=secret, new_password=new_secret
            )["token"]
    finally:
        process.stop()
    log = process.log()
    assert "login ok" in log and "change_password ok" in log  # the debug log did record them
    for text in (secret, token, new_secret, new_token):
        assert text not in log


def test_the_production_bcrypt_cost_is_12() -> None:
    assert passwords.PRODUCTION_COST == 12
    assert ServerConfig().bcrypt_cost == 12
    hasher = passwords.PasswordHasher(concurrency=1)
    assert hasher.cost == 12
    assert hasher.hash("production cost").startswith("$2b$12$")


def test_an_unknown_user_costs_the_same_bcrypt_work_as_a_wrong_password() -> None:
    hasher = passwords.PasswordHasher(cost=10, concurrency=1)
    stored = hasher.hash("the real one")

    def timed(password_hash: str | None) -> float:
        started = time.perf_counter()
        assert hasher.verify("a wrong one", password_hash) is False
        return time.perf_counter() - started

    # Interleaved and the fastest of five each, so that a burst of other work on a busy machine
    # slows both kinds alike instead of all of one kind.
    existing: list[float] = []
    missing: list[float] = []
    for _ in range(5):
        existing.append(timed(stored))
        missing.append(timed(None))
    assert 0.5 < min(missing) / min(existing) < 2.0, (existing, missing)


def test_hashing_is_bounded_to_the_configured_concurrency() -> None:
    import threading

    hasher = passwords.PasswordHasher(cost=4, concurrency=2)
    running, peak, lock = 0, 0, threading.Lock()
    original = passwords.bcrypt.hashpw

    def counting_hashpw(password: bytes, salt: bytes) -> bytes:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        try:
            return original(password, salt)
        finally:
            with lock:
                running -= 1

    passwords.bcrypt.hashpw = counting_hashpw  # type: ignore[assignment]
    try:
        threads = [threading.Thread(target=hasher.hash, args=("pw",)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        passwords.bcrypt.hashpw = original  # type: ignore[assignment]
    assert peak == 2


def test_the_mysql_c_extension_is_loaded_and_logged(mysql_url: str, tmp_path: Path) -> None:
    assert mysql.connector.HAVE_CEXT, "mysql-connector-python fell back to pure Python"
    store = seed.open_store(mysql_url)
    try:
        assert "C extension" in store.describe()
    finally:
        store.close()
    process = ServerProcess(tmp_path, db_url=mysql_url)
    process.start()
    process.stop()
    assert "(mysql-connector-python, C extension)" in process.log()


def test_a_client_of_another_server_is_not_logged_in_here(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    with ServerProcess(tmp_path, db_url=db) as first, ServerProcess(tmp_path, db_url=db) as second:
        assert (first.host, first.port) != (second.host, second.port)
        with first.client() as here:
            register_and_login(here, "roamer")
            assert here.call("whoami")["user"]["username"] == "roamer"
            # Login state lives on the connection: the other server has no session for this one.
            with WireClient(second.host, second.port, second.cafile) as there:
                assert there.error("whoami")["code"] == "unauthorized"


# Throttles that strangers cannot turn into lockouts, and timing that tells nothing -----------


def test_a_stranger_elsewhere_cannot_lock_a_member_out(server: ServerProcess) -> None:
    with server.client() as client:
        client.call("register", username="member", password=PASSWORD)
    with server.client(source="127.0.0.2") as stranger:
        codes = [
            stranger.error("login", username="member", password="guess")["code"] for _ in range(6)
        ]
    assert codes == ["invalid_credentials"] * 5 + ["rate_limited"]
    with server.client(source="127.0.0.3") as home:
        assert (
            home.call("login", username="member", password=PASSWORD)["user"]["username"] == "member"
        )


def test_a_guess_spread_over_many_addresses_is_still_slowed(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'spread.db'}"
    with ServerProcess(
        tmp_path, db_url=db, extra_args=("--login-failures-per-user", "6")
    ) as server:
        with server.client() as client:
            client.call("register", username="popular", password=PASSWORD)
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            with server.client(source=source) as guesser:
                for _ in range(2):
                    assert guesser.error("login", username="popular", password="x")["code"] == (
                        "invalid_credentials"
                    )
        # Six failures for the name: an address that has failed for it now waits...
        with server.client(source="127.0.0.2") as guesser:
            assert (
                guesser.error("login", username="popular", password="x")["code"] == "rate_limited"
            )
        # ...while an address with a clean record may still try (and log in).
        with server.client(source="127.0.0.9") as member:
            assert member.call("login", username="popular", password=PASSWORD)["token"]


def test_refused_tries_do_not_prolong_the_lockout(tmp_path: Path) -> None:
    clock = [1_800_000_000.0]
    store = seed.open_store(f"sqlite:///{tmp_path / 'clock.db'}")
    handlers = Commands(store, None, passwords.PasswordHasher(4, 1), clock=lambda: clock[0])  # type: ignore[arg-type]
    session = Session(address="10.1.1.1")

    def login(password: str) -> tuple[str, int]:
        try:
            handlers.handle(
                session, Request(1, "login", {"username": "patient", "password": password})
            )
        except ProtocolError as error:
            return error.code, error.details.get("retry_after_s", 0)
        return "ok", 0

    try:
        handlers.handle(
            session, Request(1, "register", {"username": "patient", "password": PASSWORD})
        )
        for _ in range(5):
            assert login("wrong")[0] == "invalid_credentials"
            clock[0] += 1
        waits = []
        for _ in range(5):
            code, wait = login(PASSWORD)
            assert code == "rate_limited"
            waits.append(wait)
            clock[0] += 10
        assert waits == sorted(waits, reverse=True) and waits[0] - waits[-1] >= 40
        # Just after the first failure leaves the 15-minute window, four remain: a login succeeds.
        clock[0] = 1_800_000_000.0 + 15 * 60 + 0.5
        assert login(PASSWORD)[0] == "ok"
    finally:
        store.close()


def _login_seconds(client: WireClient, username: str) -> float:
    started = time.perf_counter()
    assert client.error("login", username=username, password="not it")["code"] == (
        "invalid_credentials"
    )
    return time.perf_counter() - started


def test_wrong_passwords_and_unknown_names_take_as_long_at_any_stored_cost(tmp_path: Path) -> None:
    """Hashes made at cost 4 and then served at cost 10 must not answer a wrong password fast."""
    db = f"sqlite:///{tmp_path / 'costs.db'}"
    with ServerProcess(tmp_path, db_url=db) as cheap:  # TEST_BCRYPT_COST, 4
        with cheap.client() as client:
            for name in ("old1", "old2", "old3"):
                client.call("register", username=name, password=PASSWORD)
    with ServerProcess(tmp_path, db_url=db, env={"WAYMARK_BCRYPT_COST": "10"}) as dear:
        with dear.client(source="127.0.0.2") as client:
            # Interleaved and the fastest of six each, so that a busy machine slows both alike.
            # Unpadded, a cost-4 hash would answer 64 times faster than a cost-10 one: the
            # bounds are wide against noise and still far from that.
            known, unknown = [], []
            for number in range(6):
                known.append(_login_seconds(client, f"old{number % 3 + 1}"))
                unknown.append(_login_seconds(client, f"new{number + 1}"))
            assert 0.5 < min(known) / min(unknown) < 2.0, (known, unknown)
            # A successful login upgrades the stored hash to the configured cost.
            assert client.call("login", username="old1", password=PASSWORD)["token"]
    store = seed.open_store(db)
    try:
        upgraded = store.start_login("old1", "127.0.0.9", int(time.time()), keep_s=900).user
        untouched = store.start_login("old2", "127.0.0.9", int(time.time()), keep_s=900).user
        assert upgraded is not None and upgraded["password_hash"].startswith("$2b$10$")
        assert untouched is not None and untouched["password_hash"].startswith("$2b$04$")
    finally:
        store.close()


def test_an_unknown_name_does_the_dummy_bcrypt_work_through_login(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'dummy.db'}"
    with ServerProcess(tmp_path, db_url=db, env={"WAYMARK_BCRYPT_COST": "11"}) as server:
        with server.client() as client:
            client.call("register", username="present", password=PASSWORD)
            # Interleaved, the fastest of four each (the throttle allows five failures a
            # name): a busy machine slows both alike. Without the dummy hash an unknown name
            # would answer in well under a millisecond against cost 11's tens of them.
            known_times, unknown_times = [], []
            for number in range(4):
                known_times.append(_login_seconds(client, "present"))
                unknown_times.append(_login_seconds(client, f"absent{number}"))
    known, unknown = min(known_times), min(unknown_times)
    assert unknown > 0.02  # cost 11 is tens of milliseconds: the dummy hash really ran
    assert 0.5 < known / unknown < 2.0, (known_times, unknown_times)


# change_password ----------------------------------------------------------------------------

NEW_PASSWORD = "a new battery staple"


def test_change_password_ends_every_other_session_and_keeps_this_one(
    backend_server: ServerProcess,
) -> None:
    with (
        backend_server.client() as here,
        backend_server.client() as elsewhere,
        backend_server.client() as resumed,
    ):
        old_token = register_and_login(here, "changer")["token"]
        other_token = elsewhere.call("login", username="changer", password=PASSWORD)["token"]
        resumed.call("resume", token=old_token)

        new_token = here.call("change_password", old_password=PASSWORD, new_password=NEW_PASSWORD)[
            "token"
        ]
        assert new_token not in (old_token, other_token) and len(new_token) >= 43
        assert here.call("whoami")["user"]["username"] == "changer"  # still logged in here
        assert here.call("orders") == {"orders": []}
        for client in (elsewhere, resumed):
            assert client.error("whoami")["code"] == "unauthorized"
    with backend_server.client() as client:
        for token in (old_token, other_token):
            assert client.error("resume", token=token)["code"] == "unauthorized"
        assert client.call("resume", token=new_token)["user"]["username"] == "changer"
    with backend_server.client() as client:
        wrong = client.error("login", username="changer", password=PASSWORD)
        assert wrong["code"] == "invalid_credentials"
        assert client.call("login", username="changer", password=NEW_PASSWORD)["token"]


def test_change_password_refuses_a_wrong_old_or_weak_new_password_and_changes_nothing(
    backend_server: ServerProcess,
) -> None:
    with backend_server.client() as client, backend_server.client() as other:
        token = register_and_login(client, "careful")["token"]
        other.call("resume", token=token)
        cases = [
            ({"old_password": "not the one", "new_password": NEW_PASSWORD}, "invalid_credentials"),
            ({"old_password": PASSWORD, "new_password": "short"}, "weak_password"),
            ({"old_password": PASSWORD, "new_password": "        "}, "weak_password"),
            ({"old_password": PASSWORD, "new_password": "x" * 1025}, "weak_password"),
            ({"old_password": PASSWORD}, "bad_request"),
            ({"new_password": NEW_PASSWORD}, "bad_request"),
            ({"old_password": PASSWORD, "new_password": 12345678}, "bad_request"),
            ({"old_password": ["x"], "new_password": NEW_PASSWORD}, "bad_request"),
            ({"old_password": PASSWORD, "new_password": "x" * 5000}, "bad_request"),
            ({"old_password": "' OR '1'='1", "new_password": NEW_PASSWORD}, "invalid_credentials"),
        ]
        for args, code in cases:
            error = client.error("change_password", **args)
            assert error["code"] == code, (args, error)
            if code == "bad_request":
                assert error["details"]["argument"] in ("old_password", "new_password")
        assert client.error("change_password", new_password="x")["details"] == {
            "argument": "old_password"
        }
        # Nothing changed: both connections are still in, and the old password still works.
        assert client.call("whoami")["user"]["username"] == "careful"
        assert other.call("whoami")["user"]["username"] == "careful"
    with backend_server.client() as client:
        assert client.call("login", username="careful", password=PASSWORD)["token"]
        assert client.error("login", username="careful", password=NEW_PASSWORD)["code"] == (
            "invalid_credentials"
        )
    with backend_server.client() as guest:
        error = guest.error("change_password", old_password=PASSWORD, new_password=NEW_PASSWORD)
        assert error["code"] == "unauthorized"


def test_wrong_old_passwords_count_as_failed_logins(backend_server: ServerProcess) -> None:
    with backend_server.client() as client:
        register_and_login(client, "guessed")
        for _ in range(4):
            error = client.error("change_password", old_password="guess", new_password=NEW_PASSWORD)
            assert error["code"] == "invalid_credentials"
        # The fifth failure is a login's: the throttle counts both kinds together.
        assert client.error("login", username="guessed", password="guess")["code"] == (
            "invalid_credentials"
        )
        throttled = client.error(
            "change_password", old_password=PASSWORD, new_password=NEW_PASSWORD
        )
        assert throttled["code"] == "rate_limited"
        assert 0 < throttled["details"]["retry_after_s"] <= 15 * 60
        assert client.error("login", username="guessed", password=PASSWORD)["code"] == (
            "rate_limited"
        )
        assert client.call("whoami")["user"]["username"] == "guessed"  # still logged in
    with backend_server.client(source="127.0.0.2") as elsewhere:
        # Another address is not locked out, and the password never changed.
        assert elsewhere.call("login", username="guessed", password=PASSWORD)["token"]


LOGIN_RACERS = 6
PASSWORD_ROUNDS = 4


def test_change_password_racing_logins_leaves_no_session_on_the_old_password(
    backend_server: ServerProcess,
) -> None:
    outcomes: Counter[str] = Counter()
    for round_number in range(PASSWORD_ROUNDS):
        name = f"racing{round_number}"
        outcomes += race_change_against_logins(backend_server, name, round_number)
        with backend_server.client(source="127.0.9.9") as check:
            assert check.error("login", username=name, password=PASSWORD)["code"] == (
                "invalid_credentials"
            )
            assert check.call("login", username=name, password=NEW_PASSWORD)["token"]
    print(
        f"\nchange_password vs {LOGIN_RACERS} logins with the old password, {PASSWORD_ROUNDS}"
        f" rounds: {dict(outcomes)}; no session on the old password survived"
    )
    assert "internal error" not in backend_server.log()


def race_change_against_logins(server: ServerProcess, name: str, round_number: int) -> Counter[str]:
    """One member changes their password while LOGIN_RACERS log in with the old one."""
    with ExitStack() as stack:
        changer = stack.enter_context(server.client())
        register_and_login(changer, name)
        # Each racer from its own address, so that the throttle is not what stops them.
        racers = [
            stack.enter_context(server.client(source=f"127.0.{round_number}.{i + 2}"))
            for i in range(LOGIN_RACERS)
        ]

        def send(client: WireClient) -> dict[str, Any]:
            if client is changer:
                return client.request(
                    "change_password", old_password=PASSWORD, new_password=NEW_PASSWORD
                )
            return client.request("login", username=name, password=PASSWORD)

        responses, _, _ = race([changer, *racers], send)
        assert responses[0]["ok"], responses[0]
        outcomes: Counter[str] = Counter()
        for racer, response in zip(racers, responses[1:], strict=True):
            if response["ok"]:
                # Logged in with the old password just before the change, which ended it.
                assert racer.error("whoami")["code"] == "unauthorized"
                outcomes["logged in first, then ended"] += 1
            else:
                assert response["error"]["code"] == "invalid_credentials", response
                outcomes["refused"] += 1
        assert changer.call("whoami")["user"]["username"] == name
        with server.client() as other:
            token = responses[0]["result"]["token"]
            assert other.call("resume", token=token)["user"]["username"] == name
    return outcomes


def test_two_password_changes_at_once_one_wins(backend_server: ServerProcess) -> None:
    with backend_server.client() as first, backend_server.client() as second:
        token = register_and_login(first, "twice")["token"]
        second.call("resume", token=token)
        responses, _, _ = race(
            [first, second],
            lambda c: c.request(
                "change_password",
                old_password=PASSWORD,
                new_password=NEW_PASSWORD + ("1" if c is first else "2"),
            ),
        )
    codes = sorted("ok" if r["ok"] else r["error"]["code"] for r in responses)
    # The loser proved a password that the winner had just replaced.
    assert codes == ["invalid_credentials", "ok"]
    winner = "1" if responses[0]["ok"] else "2"
    with backend_server.client() as client:
        assert client.call("login", username="twice", password=NEW_PASSWORD + winner)["token"]
