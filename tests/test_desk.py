"""The desk and members' own data (PROTOCOL.md 1.2) through the real protocol, on both backends:
blocks, a temporary password, erasing an account without changing the reports, anonymising."""

from __future__ import annotations

import time
from pathlib import Path

from tests.test_dump import sql
from tests.wire import ServerProcess, WireClient, register_and_login

PASSWORD = "correct horse"
ADMIN, ADMIN_PASSWORD = "deskclerk", "desk horse battery"


def admin_of(server: ServerProcess) -> WireClient:
    server.create_admin(ADMIN, ADMIN_PASSWORD)
    client = server.client()
    client.call("login", username=ADMIN, password=ADMIN_PASSWORD)
    return client


def free_book(client: WireClient, copies: int = 1) -> int:
    """A lending book with at least this many copies free."""
    books = client.call("catalogue", limit=200)["books"]
    return next(b["id"] for b in books if b["copies_available"] >= copies)


def test_a_blocked_member_may_read_return_and_cancel_but_not_take(
    backend_server: ServerProcess,
) -> None:
    with admin_of(backend_server) as desk, backend_server.client() as sam:
        register_and_login(sam, "blocksam")
        book = free_book(sam, copies=1)
        loan = sam.call("borrow", book_id=book)["loan"]
        # Another book with every copy out, for a hold made before the block.
        scarce = next(b for b in sam.call("catalogue", limit=200)["books"] if b["id"] != book)
        for number in range(scarce["copies_available"]):
            with backend_server.client() as taker:
                register_and_login(taker, f"blocktaker{number}")
                taker.call("borrow", book_id=scarce["id"])
        scarce = scarce["id"]
        hold = sam.call("hold", book_id=scarce)["hold"]
        member = desk.call("block_member", username="BlockSam", reason="Lost two books.")["user"]
        assert (member["blocked"], member["blocked_reason"]) == (True, "Lost two books.")
        for cmd, args in (
            ("borrow", {"book_id": free_book(sam)}),
            ("renew", {"loan_id": loan["id"]}),
            ("hold", {"book_id": scarce}),
            ("buy", {"items": [{"book": 101, "quantity": 1}]}),
        ):
            error = sam.error(cmd, **args)
            assert error["code"] == "forbidden", (cmd, error)
            assert error["details"] == {"blocked": True, "reason": "Lost two books."}, cmd
        lend = desk.error("lend", username="blocksam", book_id=free_book(sam))
        assert lend["code"] == "forbidden" and lend["details"]["blocked"] is True
        assert sam.call("history")["loans"] and sam.call("holds")["holds"]  # reading works
        assert sam.call("cancel_hold", hold_id=hold["id"]) == {}
        assert sam.call("return", loan_id=loan["id"])["loan"]["returned_at"]
        assert desk.call("unblock_member", username="blocksam")["user"]["blocked"] is False
        assert sam.call("borrow", book_id=book)["loan"]


def test_a_temporary_password_allows_only_choosing_a_new_one(
    backend_server: ServerProcess,
) -> None:
    with admin_of(backend_server) as desk, backend_server.client() as old_session:
        token = register_and_login(old_session, "forgetful")["token"]
        temporary = desk.call("reset_password", username="forgetful")["temporary_password"]
        assert len(temporary) >= 12
        assert old_session.error("whoami")["code"] == "unauthorized"  # every session ended
        with backend_server.client() as elsewhere:
            assert elsewhere.error("resume", token=token)["code"] == "unauthorized"
        with backend_server.client() as client:
            assert client.error("login", username="forgetful", password=PASSWORD)["code"] == (
                "invalid_credentials"
            )
            login = client.call("login", username="forgetful", password=temporary)
            assert login["must_change_password"] is True
            for cmd in ("orders", "history", "notices", "my_data"):
                error = client.error(cmd)
                assert (error["code"], error["details"]) == (
                    "forbidden",
                    {"must_change_password": True},
                ), cmd
            assert client.call("whoami")["user"]["username"] == "forgetful"
            assert client.call("hello") and client.call("health")
            client.call("change_password", old_password=temporary, new_password="a new staple")
            assert client.call("orders") == {"orders": []}
            kinds = [n["kind"] for n in client.call("notices")["notices"]]
            assert kinds.count("password_changed") == 2  # the reset, then the change
        with backend_server.client() as again:
            assert "must_change_password" not in again.call(
                "login", username="forgetful", password="a new staple"
            )


def test_deleting_an_account_keeps_the_reports_and_frees_the_name(
    backend_server: ServerProcess,
) -> None:
    with admin_of(backend_server) as desk, backend_server.client() as leaver:
        register_and_login(leaver, "leaver")
        leaver.call("set_email", email="leaver@example.org")
        order = leaver.call("buy", items=[{"book": 104, "quantity": 2}])["order"]
        book = free_book(leaver)
        loan = leaver.call("borrow", book_id=book)["loan"]
        busy = leaver.error("delete_account", password=PASSWORD)
        assert busy["code"] == "conflict"
        assert busy["details"] == {"active_loans": 1, "backorder_outstanding": 0}
        wrong = leaver.error("delete_account", password="not my password")
        assert wrong["code"] == "invalid_credentials"
        leaver.call("return", loan_id=loan["id"])
        sales_before = desk.call("sales")
        overdue_before = desk.call("overdue")
        assert leaver.call("delete_account", password=PASSWORD) == {}
        assert leaver.error("whoami")["code"] == "unauthorized"
        assert desk.call("sales") == sales_before and desk.call("overdue") == overdue_before
        assert desk.error("member", username="leaver")["code"] == "not_found"
        assert all(m["username"] != "leaver" for m in desk.call("members")["members"])
    with backend_server.client() as newcomer:
        register_and_login(newcomer, "Leaver")  # the name may be registered again
        mine = newcomer.call("my_data")
        assert mine["user"]["username"] == "Leaver" and mine["user"]["email"] is None
        assert (mine["loans"], mine["orders"], mine["holds"], mine["notices"]) == ([], [], [], [])
        assert all(o["id"] != order["id"] for o in newcomer.call("orders")["orders"])


def test_a_wrong_password_to_delete_an_account_counts_as_a_failed_login(
    backend_server: ServerProcess,
) -> None:
    with backend_server.client() as client:
        register_and_login(client, "guessedat")
        codes = [client.error("delete_account", password="wrong one")["code"] for _ in range(6)]
        assert codes[:5] == ["invalid_credentials"] * 5 and codes[5] == "rate_limited"
        assert client.call("whoami")  # the account is still there


def test_my_data_holds_everything_about_the_member(backend_server: ServerProcess) -> None:
    with backend_server.client() as client:
        user = register_and_login(client, "curious")["user"]
        client.call("set_email", email="curious@example.org")
        client.call("buy", items=[{"book": 101, "quantity": 1}])
        loan = client.call("borrow", book_id=free_book(client))["loan"]
        data = client.call("my_data")
    assert data["user"]["id"] == user["id"] and data["user"]["email"] == "curious@example.org"
    assert data["user"]["created_at"].endswith("Z")
    assert [entry["id"] for entry in data["loans"]] == [loan["id"]]
    assert len(data["orders"]) == 1 and data["holds"] == []
    assert [n["kind"] for n in data["notices"]] == ["order_placed"]


def test_the_sweep_unlinks_old_returned_loans_and_forgets_old_keys(
    tmp_path: Path, db_url: str
) -> None:
    with ServerProcess(
        tmp_path, db_url=db_url, extra_args=("--anonymise-after-days", "30")
    ) as server:
        with admin_of(server) as desk, server.client() as reader:
            register_and_login(reader, "oldreader")
            old = reader.call("borrow", book_id=free_book(reader))["loan"]
            reader.call("return", loan_id=old["id"])
            recent = reader.call("borrow", book_id=free_book(reader))["loan"]
            reader.call("return", loan_id=recent["id"])
            long_ago = int(time.time()) - 31 * 86_400
            sql(db_url, "UPDATE loans SET returned_at = ? WHERE id = ?", (long_ago, old["id"]))
            first = reader.keyed("buy", "old-key-0001", items=[{"book": 101, "quantity": 1}])
            sql(db_url, "UPDATE idempotency_keys SET created_at = ?", (long_ago,))
            desk.call("sweep_notices")
            assert [entry["id"] for entry in reader.call("history")["loans"]] == [recent["id"]]
            # The key was forgotten: other arguments are no conflict, and the work is done.
            again = reader.keyed("buy", "old-key-0001", items=[{"book": 102, "quantity": 1}])
            assert again["ok"] and "replayed" not in again
            assert again["result"]["order"]["id"] != first["result"]["order"]["id"]


def test_stats_count_the_notices_waiting_for_email(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, db_url=f"sqlite:///{tmp_path / 's.db'}") as server:
        with admin_of(server) as desk:
            notices = desk.call("stats")["notices"]
    assert notices == {"pending": 0, "failed": 0}
