"""Notices by email, through a real SMTP relay (aiosmtpd on 127.0.0.1, tests/smtp_relay.py).

The servers are real server.py processes started with --smtp-url; the relay records what it
accepts, refuses chosen recipients, goes down and comes back, or holds a message while a test
kills the server that sent it. The pauses between tries are proved in-process, on a real store
and the real relay, with MailSender's clock in the test's hands: nobody waits an hour.
"""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

import mailer
import outbox
import seed
from db import Store, StoreConfig
from engine import PoolConfig
from tests.fake_openlibrary import FakeOpenLibrary
from tests.smtp_relay import HOST, Received, SMTPRelay, wait_for
from tests.test_notices import (
    ADMIN,
    ADMIN_PASSWORD,
    DAY_S,
    PASSWORD,
    admin,
    borrow,
    lending_books,
    member,
    notices,
    set_due,
    sql,
)
from tests.wire import ServerProcess

SENDER = "waymark@localhost"  # --mail-from's default
MAIL_WAIT_S = 30.0  # the sender polls every 2 s; this is only the bound for a busy machine


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as opened:
        yield opened


@pytest.fixture
def relay() -> Iterator[SMTPRelay]:
    with SMTPRelay() as running:
        yield running


def mail_server(
    stack: ExitStack,
    tmp_path: Path,
    db: str,
    openlibrary: FakeOpenLibrary,
    smtp_url: str,
    *extra: str,
) -> ServerProcess:
    """A server.py that emails notices through smtp_url; stopped when the test ends."""
    return stack.enter_context(
        ServerProcess(tmp_path, db, openlibrary.url, extra_args=("--smtp-url", smtp_url, *extra))
    )


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'server.db'}"


def mail_state(db: str, notice_id: int) -> tuple[str, int, int | None, int | None]:
    """The notice's outbox columns: state, attempts, next try, claimed until."""
    [row] = sql(
        db,
        "SELECT mail_state, mail_attempts, mail_next_at, mail_claimed_until FROM notices"
        " WHERE id = ?",
        (notice_id,),
    )
    return str(row[0]), int(row[1]), row[2], row[3]


def message_id(notice_id: int) -> str:
    return mailer.message_id(notice_id, SENDER)


def check_mail_of(mail: Received, notice: dict[str, Any], to: str) -> None:
    """The email is the notice: plain text, its subject and body, to the member, its id."""
    message = mail.message
    assert mail.rcpt_tos == (to,) and mail.mail_from == SENDER
    assert message["To"] == to and message["From"] == SENDER
    assert message["Subject"] == notice["subject"]
    assert not message.is_multipart() and message.get_content_type() == "text/plain"
    assert message.get_content().strip() == notice["body"]
    # The Message-ID names the notice, so that a resend is recognisably the same message.
    assert re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", mail.message_id), mail.message_id
    assert f"-{notice['id']}@" in mail.message_id
    assert mail.message_id == message_id(notice["id"])


# One notice, one email --------------------------------------------------------------------


def test_a_buy_emails_its_receipt_once_as_plain_text(
    tmp_path: Path, openlibrary_fake: FakeOpenLibrary, relay: SMTPRelay, stack: ExitStack
) -> None:
    server = mail_server(stack, tmp_path, sqlite_url(tmp_path), openlibrary_fake, relay.url)
    carl, _ = member(stack, server, "carl")  # no email: his notices stay in the app
    alice, _ = member(stack, server, "alice", "alice@example.org")
    carl.call("buy", items=[{"book": 102, "quantity": 1}])
    order = alice.call("buy", items=[{"book": 101, "quantity": 2}])["order"]
    [notice] = notices(alice)
    assert notice["kind"] == "order_placed" and notice["details"]["order_id"] == order["id"]

    [mail] = relay.wait_for_messages(1, MAIL_WAIT_S)
    check_mail_of(mail, notice, "alice@example.org")
    assert "£" in mail.message.get_content()  # the total, in pounds, survives the encoding
    emailed = wait_for(lambda: notices(alice)[0]["emailed"], MAIL_WAIT_S, "emailed: true")
    assert emailed is True
    assert notices(alice)[0]["read"] is False  # emailing does not mark it read

    # Later passes of the sender do not send it again: the next notice is the only new mail.
    second = alice.call("buy", items=[{"book": 103, "quantity": 1}])["order"]
    relay.wait_for_messages(2, MAIL_WAIT_S)
    newest = notices(alice)[0]
    assert newest["details"]["order_id"] == second["id"]
    assert [m.message_id for m in relay.messages] == [
        message_id(notice["id"]),
        message_id(newest["id"]),
    ]
    # Carl gives an address: from then on his notices are emailed, the older one never.
    carl.call("set_email", email="carl@example.org")
    carl.call("buy", items=[{"book": 104, "quantity": 1}])
    relay.wait_for_messages(3, MAIL_WAIT_S)
    carls = notices(carl)
    check_mail_of(relay.messages[2], carls[0], "carl@example.org")
    assert [m.rcpt_tos for m in relay.messages] == [
        ("alice@example.org",),
        ("alice@example.org",),
        ("carl@example.org",),
    ]
    assert carls[1]["emailed"] is False


def test_a_refused_recipient_fails_that_notice_for_good_and_the_others_still_go(
    tmp_path: Path, openlibrary_fake: FakeOpenLibrary, relay: SMTPRelay, stack: ExitStack
) -> None:
    db = sqlite_url(tmp_path)
    relay.refused.add("nobody@example.org")
    server = mail_server(stack, tmp_path, db, openlibrary_fake, relay.url, "--mail-retry-s", "1")
    gone, _ = member(stack, server, "gone", "nobody@example.org")
    alice, _ = member(stack, server, "alice", "alice@example.org")
    gone.call("buy", items=[{"book": 101, "quantity": 1}])
    alice.call("buy", items=[{"book": 102, "quantity": 1}])
    [refused] = notices(gone)

    [mail] = relay.wait_for_messages(1, MAIL_WAIT_S)
    check_mail_of(mail, notices(alice)[0], "alice@example.org")
    wait_for(lambda: mail_state(db, refused["id"])[0] == "failed", MAIL_WAIT_S, "failed")
    assert mail_state(db, refused["id"])[:2] == ("failed", 1)
    assert notices(gone)[0]["emailed"] is False

    # Passes of the sender after the 550 (two more mails of alice's go out) never try it again,
    # though tries after a failure are a second apart here.
    for count, book in ((2, 103), (3, 104)):
        alice.call("buy", items=[{"book": book, "quantity": 1}])
        relay.wait_for_messages(count, MAIL_WAIT_S)
    assert relay.refused_attempts == ["nobody@example.org"]
    assert mail_state(db, refused["id"])[:2] == ("failed", 1)
    assert all(m.rcpt_tos == ("alice@example.org",) for m in relay.messages)
    assert "could not be emailed" in server.log()


# A relay that is down ---------------------------------------------------------------------


def test_a_relay_that_is_down_gets_the_notice_once_it_is_back(
    tmp_path: Path, openlibrary_fake: FakeOpenLibrary, relay: SMTPRelay, stack: ExitStack
) -> None:
    db = sqlite_url(tmp_path)
    relay.stop()
    server = mail_server(stack, tmp_path, db, openlibrary_fake, relay.url, "--mail-retry-s", "0.5")
    alice, _ = member(stack, server, "alice", "alice@example.org")
    alice.call("buy", items=[{"book": 101, "quantity": 1}])
    [notice] = notices(alice)

    # Tried and refused (connection refused) twice: still pending, to be tried again.
    def tried_twice() -> tuple[str, int, int | None, int | None] | None:
        found = mail_state(db, notice["id"])
        return found if found[1] >= 2 and found[3] is None else None  # not mid-try

    state, _, next_at, _ = wait_for(tried_twice, MAIL_WAIT_S, "two failed tries")
    assert state == "pending" and next_at is not None
    assert notices(alice)[0]["emailed"] is False
    assert relay.messages == []

    relay.start()
    [mail] = relay.wait_for_messages(1, MAIL_WAIT_S)
    check_mail_of(mail, notice, "alice@example.org")
    wait_for(lambda: notices(alice)[0]["emailed"], MAIL_WAIT_S, "emailed: true")
    assert mail_state(db, notice["id"])[0] == "sent"
    assert len(relay.messages) == 1
    assert "trying later" in server.log()


@pytest.fixture
def mail_store(tmp_path: Path) -> Iterator[Store]:
    """A real store (SQLite) whose notices wait for a mail sender, as a server's with a relay."""
    opened = seed.open_store(
        sqlite_url(tmp_path), StoreConfig(pool=PoolConfig(pool_size=4), mail_enabled=True)
    )
    try:
        yield opened
    finally:
        opened.close()


def test_the_sender_pauses_longer_after_each_failure_and_gives_up_after_24_hours(
    mail_store: Store, relay: SMTPRelay
) -> None:
    start = 1_800_000_000
    user = mail_store.create_user("alice", "!", start, email="alice@example.org")
    mail_store.place_order(user["id"], {101: 1}, start)
    [notice], _ = mail_store.notices_for(user["id"])
    clock = [float(start)]
    sender = outbox.MailSender(
        mail_store, mailer.mail_relay(relay.url), SENDER, clock=lambda: clock[0]
    )
    db = f"sqlite:///{mail_store.database.backend.path}"  # type: ignore[attr-defined]
    relay.stop()

    pauses = []
    while True:
        assert sender.send_due() == 0
        state, attempts, next_at, _ = mail_state(db, notice["id"])
        if state == "failed":
            break
        assert state == "pending" and next_at is not None
        pauses.append(next_at - int(clock[0]))
        assert len(pauses) <= 40, pauses  # 24 hours of doubling pauses are far fewer tries
        clock[0] = next_at - 1  # a second early: nothing is tried
        sender.send_due()
        assert mail_state(db, notice["id"])[1] == attempts
        clock[0] = next_at

    # 60 s, doubling each time up to an hour, for as long as the next try is within 24 hours.
    expected: list[float] = []
    at = start
    while True:
        pause = min(outbox.FIRST_PAUSE_S * 2 ** len(expected), outbox.LONGEST_PAUSE_S)
        if at + pause >= start + 24 * 3600:
            break
        expected.append(pause)
        at += pause
    assert pauses[:8] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert pauses == expected
    assert mail_state(db, notice["id"])[1] == len(pauses) + 1
    assert start + 23 * 3600 <= clock[0] < start + 24 * 3600

    relay.start()  # back, but too late: a failed notice is not sent again
    clock[0] += 7 * 24 * 3600
    assert sender.send_due() == 0
    assert relay.messages == [] and relay.connections == 0
    assert mail_store.notices_for(user["id"])[0][0]["emailed_at"] is None
    assert mail_store.mail_counts() == {"pending": 0, "failed": 1}


def test_the_sender_sends_once_the_relay_is_back_within_the_24_hours(
    mail_store: Store, relay: SMTPRelay
) -> None:
    start = 1_800_000_000
    user = mail_store.create_user("alice", "!", start, email="alice@example.org")
    mail_store.place_order(user["id"], {101: 1}, start)
    mail_store.place_order(user["id"], {102: 1}, start)
    clock = [float(start)]
    sender = outbox.MailSender(
        mail_store, mailer.mail_relay(relay.url), SENDER, clock=lambda: clock[0]
    )
    relay.stop()
    assert sender.send_due() == 0  # both wait: a relay that is down fails the whole batch
    assert mail_store.mail_counts() == {"pending": 2, "failed": 0}
    relay.start()
    clock[0] += outbox.FIRST_PAUSE_S - 1
    assert sender.send_due() == 0 and relay.messages == []  # not yet
    clock[0] += 1
    assert sender.send_due() == 2
    found, _ = mail_store.notices_for(user["id"])
    assert sorted(m.message_id for m in relay.messages) == sorted(
        message_id(n["id"]) for n in found
    )
    assert all(n["emailed_at"] == start + outbox.FIRST_PAUSE_S for n in found)
    assert mail_store.mail_counts() == {"pending": 0, "failed": 0}


# Many servers, one relay ------------------------------------------------------------------


def test_two_servers_on_one_mysql_database_send_every_notice_exactly_once(
    tmp_path: Path, mysql_url: str, openlibrary_fake: FakeOpenLibrary, relay: SMTPRelay,
    stack: ExitStack,
) -> None:  # fmt: skip
    """First, 30 notices made at once: one server claims a batch of 20 and is held at the
    relay on its first mail, while a second server, started then, claims and sends the other
    10, and none of the first's. Then both run freely through 30 more. Every Message-ID
    arrives once. (The servers differ only in --mail-from's local part, so the relay's
    envelope says which sent what; their Message-IDs name the same domain.)"""
    senders = ("server-a@library.test", "server-b@library.test")
    first = mail_server(
        stack, tmp_path, mysql_url, openlibrary_fake, relay.url, "--mail-from", senders[0]
    )
    desk = admin(stack, first)
    copies_left = {b["id"]: b["copies"] for b in lending_books(desk)}
    loans = []
    clients = []
    for i in range(6):  # 6 members x 5 loans
        client, _ = member(stack, first, f"member{i}", f"member{i}@example.org")
        mine = [book for book, left in copies_left.items() if left > 0][:5]
        for book in mine:
            copies_left[book] -= 1
            loans.append(borrow(client, book)["id"])
        clients.append(client)

    def sweep_30_due_soon(offset: int, after_id: int) -> list[int]:
        """30 new due_soon notices in one transaction (new due dates); their ids."""
        due = int(time.time()) + DAY_S + offset
        for loan in loans:
            set_due(mysql_url, loan, due)
        assert desk.call("sweep_notices")["created"]["due_soon"] == 30
        return [
            int(r[0]) for r in sql(mysql_url, "SELECT id FROM notices WHERE id > ?", (after_id,))
        ]

    def sent_count() -> int:
        return int(sql(mysql_url, "SELECT COUNT(*) FROM notices WHERE mail_state = 'sent'")[0][0])

    relay.hold_at = 1
    ids = sweep_30_due_soon(0, 0)
    assert len(ids) == 30
    wait_for(relay.held.is_set, MAIL_WAIT_S, "the first server's first mail")
    assert relay.messages[0].mail_from == senders[0]
    mail_server(stack, tmp_path, mysql_url, openlibrary_fake, relay.url, "--mail-from", senders[1])
    left = 30 - outbox.BATCH
    wait_for(lambda: sent_count() == left, MAIL_WAIT_S, "the second server's mails")
    assert Counter(m.mail_from for m in relay.messages) == {senders[0]: 1, senders[1]: left}
    relay.release.set()
    wait_for(lambda: sent_count() == 30, MAIL_WAIT_S, "all 30 notices marked sent")
    assert Counter(m.mail_from for m in relay.messages) == {
        senders[0]: outbox.BATCH,
        senders[1]: left,
    }

    relay.delay_s = 0.1  # a batch of 20 outlasts a poll: the servers' passes overlap
    ids += sweep_30_due_soon(3600, max(ids))
    assert len(set(ids)) == 60
    wait_for(lambda: sent_count() == 60, 60, "all 60 notices marked sent")
    # Marked sent, none can be claimed again: every send that will ever happen has happened.
    sent = Counter(m.message_id for m in relay.messages)
    assert sent == Counter({mailer.message_id(i, senders[0]): 1 for i in ids})
    for i, client in enumerate(clients):
        mine = notices(client)
        assert len(mine) == 10 and all(n["emailed"] for n in mine)
        assert {m.message_id for m in relay.messages_to(f"member{i}@example.org")} == {
            mailer.message_id(n["id"], senders[0]) for n in mine
        }


def test_a_server_killed_mid_batch_leaves_the_rest_to_another_within_its_lease(
    tmp_path: Path, openlibrary_fake: FakeOpenLibrary, relay: SMTPRelay, stack: ExitStack
) -> None:
    db = sqlite_url(tmp_path)
    args = ("--mail-lease-s", "2")
    first = mail_server(stack, tmp_path, db, openlibrary_fake, relay.url, *args)
    desk = admin(stack, first)
    alice, _ = member(stack, first, "alice", "alice@example.org")
    now = int(time.time())
    for n, book in enumerate(lending_books(alice)[:5]):
        set_due(db, borrow(alice, book["id"])["id"], now + DAY_S + n)
    relay.hold_at = 2  # the second mail is taken, and its 250 never reaches the sender
    assert desk.call("sweep_notices")["created"]["due_soon"] == 5  # 5 notices in one go
    ids = sorted(n["id"] for n in notices(alice))

    wait_for(relay.held.is_set, MAIL_WAIT_S, "the second mail")
    states = [mail_state(db, i) for i in ids]
    assert states[0][0] == "sent"
    assert all(s[0] == "pending" and s[3] is not None for s in states[1:]), states  # claimed
    first.stop(signal.SIGKILL)
    relay.release.set()

    second = mail_server(stack, tmp_path, db, openlibrary_fake, relay.url, *args)
    wait_for(lambda: all(mail_state(db, i)[0] == "sent" for i in ids), MAIL_WAIT_S, "all sent")
    sent = Counter(m.message_id for m in relay.messages)
    assert set(sent) == {message_id(i) for i in ids}
    assert all(1 <= count <= 2 for count in sent.values()), sent
    assert sent[message_id(ids[1])] == 2  # the one the relay took as the sender died
    first_copy, again = [m for m in relay.messages if m.message_id == message_id(ids[1])]
    for header in ("Message-ID", "Subject", "To", "From", "Date"):
        assert first_copy.message[header] == again.message[header]
    assert first_copy.message.get_content() == again.message.get_content()
    with second.client() as client:
        client.call("login", username="alice", password=PASSWORD)
        assert all(n["emailed"] for n in notices(client))


# Nothing secret leaves the server -----------------------------------------------------------


def test_no_password_or_token_shows_in_any_mail_or_the_server_log(
    tmp_path: Path, openlibrary_fake: FakeOpenLibrary, stack: ExitStack
) -> None:
    relay_login = ("waymark-relay", "Relay-Pass-9q7ZT")
    relay = stack.enter_context(SMTPRelay(credentials=relay_login))
    smtp_url = f"smtp://{relay_login[0]}:{relay_login[1]}@{HOST}:{relay.port}"
    server = mail_server(
        stack, tmp_path, sqlite_url(tmp_path), openlibrary_fake, smtp_url, "--log-level", "DEBUG"
    )
    desk = admin(stack, server)
    secrets = {ADMIN_PASSWORD, relay_login[1], "Orig-Pass-Kx81", "Second-Pass-Mv42",
               "Third-Pass-Zr55", "Wrong-Pass-Qy19"}  # fmt: skip
    secrets.add(desk.call("login", username=ADMIN, password=ADMIN_PASSWORD)["token"])

    alice = stack.enter_context(server.client())
    alice.call("register", username="alice", password="Orig-Pass-Kx81", email="alice@example.org")
    secrets.add(alice.call("login", username="alice", password="Orig-Pass-Kx81")["token"])
    with server.client() as wrong:
        assert wrong.error("login", username="alice", password="Wrong-Pass-Qy19")["code"] == (
            "invalid_credentials"
        )
    secrets.add(
        alice.call("change_password", old_password="Orig-Pass-Kx81",
                   new_password="Second-Pass-Mv42")["token"]
    )  # fmt: skip
    temporary = desk.call("reset_password", username="alice")["temporary_password"]
    secrets.add(temporary)
    again = stack.enter_context(server.client())
    secrets.add(again.call("login", username="alice", password=temporary)["token"])
    token = again.call("change_password", old_password=temporary, new_password="Third-Pass-Zr55")[
        "token"
    ]
    secrets.add(token)
    with server.client() as resumed:
        resumed.call("resume", token=token)
        resumed.call("buy", items=[{"book": 101, "quantity": 1}])

    mails = relay.wait_for_messages(4, MAIL_WAIT_S)  # 3 password_changed, 1 order_placed
    assert sorted(m.message["Subject"] for m in mails) == sorted(
        [n["subject"] for n in notices(again)]
    )
    assert relay.logins and set(relay.logins) == {relay_login}  # it did use the relay password
    server.stop()
    log = server.log()
    assert "SMTP relay" in log  # the relay is named in the log, without its password
    for secret in sorted(secrets):
        for mail in mails:
            assert secret not in mail.raw.decode("utf-8", "replace"), secret
            assert secret not in mail.message.get_content(), secret
        assert secret not in log, secret


# Failures that are the relay's or one message's, not every notice's -----------------------------


def two_due_soon_notices(
    stack: ExitStack, server: ServerProcess, db: str, first_email: str, second_email: str
) -> tuple[tuple[Any, dict[str, Any]], tuple[Any, dict[str, Any]]]:
    """Two members' due_soon notices, made by one sweep in one transaction (so one sender
    claims both in one batch), the first member's first; each member's client and notice."""
    desk = admin(stack, server)
    books = lending_books(desk)
    made = []
    now = int(time.time())
    for n, (name, address) in enumerate((("first", first_email), ("second", second_email))):
        client, _ = member(stack, server, name, address)
        set_due(db, borrow(client, books[n]["id"])["id"], now + DAY_S)
        made.append(client)
    assert desk.call("sweep_notices")["created"]["due_soon"] == 2
    [first], [second] = notices(made[0]), notices(made[1])
    assert first["id"] < second["id"]
    return (made[0], first), (made[1], second)


def test_a_recipient_the_relay_puts_off_does_not_hold_back_the_others(
    tmp_path: Path, openlibrary_fake: FakeOpenLibrary, relay: SMTPRelay, stack: ExitStack
) -> None:
    """A 451 for one recipient (greylisting, a full mailbox) is about that message: the rest of
    the batch still goes at once, and the put-off one is tried again later."""
    db = sqlite_url(tmp_path)
    relay.deferred.add("first@example.org")
    server = mail_server(stack, tmp_path, db, openlibrary_fake, relay.url, "--mail-retry-s", "0.5")
    (first, put_off), (second, other) = two_due_soon_notices(
        stack, server, db, "first@example.org", "second@example.org"
    )
    [mail] = relay.wait_for_messages(1, MAIL_WAIT_S)
    check_mail_of(mail, other, "second@example.org")
    assert mail_state(db, put_off["id"])[0] == "pending"

    relay.deferred.clear()  # the greylisting lapses: the put-off notice now goes too
    relay.wait_for_messages(2, MAIL_WAIT_S)
    check_mail_of(relay.messages[1], put_off, "first@example.org")
    assert len(relay.deferred_attempts) >= 1


def test_a_relay_refusing_the_servers_login_keeps_the_notices_to_try_again(
    tmp_path: Path, openlibrary_fake: FakeOpenLibrary, stack: ExitStack
) -> None:
    """A 535 at AUTH says the relay will not take any mail from this server yet (a password
    being changed on one side): the relay fails, so its notices are tried again for 24 hours,
    never marked failed at the first try."""
    relay = stack.enter_context(SMTPRelay(credentials=("waymark", "the new password")))
    db = sqlite_url(tmp_path)
    smtp_url = f"smtp://waymark:the%20old%20password@{HOST}:{relay.port}"
    server = mail_server(stack, tmp_path, db, openlibrary_fake, smtp_url, "--mail-retry-s", "0.5")
    alice, _ = member(stack, server, "alice", "alice@example.org")
    alice.call("buy", items=[{"book": 101, "quantity": 1}])
    [notice] = notices(alice)
    wait_for(lambda: relay.logins, MAIL_WAIT_S, "a login at the relay")
    assert relay.logins[0] == ("waymark", "the old password")
    wait_for(lambda: mail_state(db, notice["id"])[1] >= 1, MAIL_WAIT_S, "the first try recorded")
    assert mail_state(db, notice["id"])[0] == "pending"

    relay.credentials = ("waymark", "the old password")  # the relay's side is put right
    [mail] = relay.wait_for_messages(1, MAIL_WAIT_S)
    check_mail_of(mail, notice, "alice@example.org")


def test_a_title_with_a_line_break_neither_adds_a_header_nor_stops_other_mail(
    tmp_path: Path, openlibrary_fake: FakeOpenLibrary, relay: SMTPRelay, stack: ExitStack
) -> None:
    """Open Library titles are other people's text: one with a line break (here an attempt
    to add a Bcc header) must not put a header into a mail, and must not stop the sender."""
    db = sqlite_url(tmp_path)
    openlibrary_fake.works["OL999001W"] = {
        "key": "/works/OL999001W", "title": "Walks\r\nBcc: eve@example.net", "authors": [],
    }  # fmt: skip
    server = mail_server(
        stack, tmp_path, db, openlibrary_fake, relay.url, "--mail-lease-s", "1",
        "--mail-retry-s", "0.5",
    )  # fmt: skip
    desk = admin(stack, server)
    odd = desk.call("add_book", key="/works/OL999001W", copies=1)["book"]
    alice, _ = member(stack, server, "alice", "alice@example.org")
    now = int(time.time())
    for n, book_id in enumerate((odd["id"], lending_books(alice)[0]["id"])):
        set_due(db, borrow(alice, book_id)["id"], now + DAY_S + n)
    assert desk.call("sweep_notices")["created"]["due_soon"] == 2
    odd_notice, plain = sorted(notices(alice), key=lambda n: n["id"])

    # The plain notice goes out, though the odd one is first in the batch (and in every
    # batch after a lease of a second).
    wait_for(lambda: relay.messages_to("alice@example.org"), MAIL_WAIT_S, "the plain notice")
    wait_for(lambda: mail_state(db, plain["id"])[0] == "sent", MAIL_WAIT_S, "marked sent")
    for mail in relay.messages:
        assert mail.rcpt_tos == ("alice@example.org",)
        assert "Bcc" not in mail.message and "eve@example.net" not in str(mail.message["To"])
    assert mail_state(db, odd_notice["id"])[0] in ("sent", "failed")
    assert "a background pass failed" not in server.log()


def test_a_mail_from_with_a_display_name_gives_well_formed_headers(
    tmp_path: Path, openlibrary_fake: FakeOpenLibrary, relay: SMTPRelay, stack: ExitStack
) -> None:
    server = mail_server(
        stack, tmp_path, sqlite_url(tmp_path), openlibrary_fake, relay.url,
        "--mail-from", "Waymark Library <library@example.org>",
    )  # fmt: skip
    alice, _ = member(stack, server, "alice", "alice@example.org")
    alice.call("buy", items=[{"book": 101, "quantity": 1}])
    [notice] = notices(alice)
    [mail] = relay.wait_for_messages(1, MAIL_WAIT_S)
    assert mail.mail_from == "library@example.org"
    assert mail.message["From"].addresses[0].addr_spec == "library@example.org"
    assert re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", mail.message_id), mail.message_id
    assert f"-{notice['id']}@" in mail.message_id


def test_an_address_the_relay_cannot_take_fails_alone_and_holds_back_no_one(
    tmp_path: Path, openlibrary_fake: FakeOpenLibrary, relay: SMTPRelay, stack: ExitStack
) -> None:
    """register accepts an address with letters beyond ASCII; a relay without SMTPUTF8 (as
    this one) can never take it. That is about this one message: it fails for good, at once,
    and the member after it in the batch still gets their mail."""
    db = sqlite_url(tmp_path)
    server = mail_server(stack, tmp_path, db, openlibrary_fake, relay.url, "--mail-retry-s", "0.5")
    (_, unsendable), (_, other) = two_due_soon_notices(
        stack, server, db, "åsa@exämple.org", "second@example.org"
    )
    [mail] = relay.wait_for_messages(1, MAIL_WAIT_S)
    check_mail_of(mail, other, "second@example.org")
    wait_for(lambda: mail_state(db, unsendable["id"])[0] != "pending", MAIL_WAIT_S, "settled")
    assert mail_state(db, unsendable["id"])[:2] == ("failed", 1)
