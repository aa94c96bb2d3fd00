"""The accounts' part of the Store: users, sessions, login attempts."""

from __future__ import annotations

from dataclasses import dataclass

import notice_texts
import rules
from db_base import NOBODY_KEY, StoreBase
from engine import DuplicateKeyError, Row, Tx
from errors import UsernameTakenError


@dataclass(frozen=True)
class LoginStart:
    """A recorded login attempt, the user it names (None if none), and the times of earlier
    failures: this username from this address, this username from anywhere, this address."""

    attempt_id: int
    user: Row | None
    failures_by_user_and_address: list[int]
    failures_by_user: list[int]
    failures_by_address: list[int]


class AccountStore(StoreBase):
    """Members and admins, their sessions, and the record the login throttle reads."""

    def create_user(
        self,
        username: str,
        password_hash: str,
        now: int,
        role: str = "member",
        email: str | None = None,
    ) -> Row:
        """A new user; username_taken if the name exists ignoring case."""

        def work(tx: Tx) -> Row:
            user_id = self._insert_user(tx, username, password_hash, role, now)
            if email is not None:
                tx.run("UPDATE users SET email = ? WHERE id = ?", (email, user_id))
            return {"id": user_id, "username": username, "role": role, "email": email}

        try:
            return self.database.write(work)
        except DuplicateKeyError:
            raise UsernameTakenError(f"The username {username!r} is already taken.", {}) from None

    def make_admin(self, username: str, password_hash: str, now: int) -> tuple[Row, bool]:
        """Create an admin, or promote an existing user and set the password; (user, created)."""

        def work(tx: Tx) -> tuple[Row, bool]:
            key = rules.username_key(username)
            found = tx.row(
                f"SELECT id, username FROM users WHERE username_key = ?{tx.lock}", (key,)
            )
            if found:
                tx.run(
                    "UPDATE users SET role = 'admin', password_hash = ? WHERE id = ?",
                    (password_hash, found["id"]),
                )
                return {"id": found["id"], "username": found["username"], "role": "admin"}, False
            user_id = self._insert_user(tx, username, password_hash, "admin", now)
            return {"id": user_id, "username": username, "role": "admin"}, True

        return self.database.write(work)

    def _insert_user(self, tx: Tx, username: str, password_hash: str, role: str, now: int) -> int:
        _, user_id = tx.run(
            "INSERT INTO users (username, username_key, password_hash, role, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (username, rules.username_key(username), password_hash, role, now),
        )
        assert user_id is not None
        return user_id

    def start_login(self, username_key: str, address: str, now: int, keep_s: int) -> LoginStart:
        """Record a login attempt as failed until it succeeds, and read what the throttle needs.

        Recording before checking means parallel guesses all see each other, so they cannot
        slip past the throttle together. Attempts older than keep_s are forgotten here.
        """

        def work(tx: Tx) -> LoginStart:
            # Write the name's counter row first: tries at one name then run one at a time, on
            # every node of a cluster, and each reads the failures the one before it wrote. An
            # inserted failure row alone serialises nothing: under MySQL's snapshot reads (and
            # across Galera nodes) parallel guesses each saw too few and got bcrypt.
            claim = "UPDATE login_names SET attempts = attempts + 1 WHERE username_key = ?"
            claimed, _ = tx.run(claim, (username_key,))
            if not claimed:
                # A name never tried: make its row, then write it. An insert that another try
                # beat would write nothing, and a try that writes no row serialises nothing
                # (on Galera two such tries certify side by side: six got bcrypt, not five).
                tx.run(
                    f"{self.database.backend.insert_ignore} INTO login_names"
                    " (username_key, attempts) VALUES (?, 0)",
                    (username_key,),
                )
                tx.run(claim, (username_key,))
            tx.run("DELETE FROM login_failures WHERE failed_at < ?", (now - keep_s,))
            _, attempt_id = tx.run(
                "INSERT INTO login_failures (username_key, address, failed_at) VALUES (?, ?, ?)",
                (username_key, address, now),
            )
            assert attempt_id is not None
            since = now - keep_s
            # Earlier failures in the window, this attempt left out: (username, address) pairs.
            # Causal on a Galera node: first apply every write the cluster committed before,
            # so a try that another node just counted is seen here (read-your-writes).
            failures = tx.rows(
                f"{tx.causal}SELECT username_key, address, failed_at FROM login_failures"
                " WHERE (username_key = ? OR address = ?) AND failed_at >= ? AND id <> ?"
                " ORDER BY failed_at",
                (username_key, address, since, attempt_id),
            )
            user = tx.row(
                "SELECT id, username, role, email, must_change_password, password_hash FROM users"
                " WHERE username_key = ? AND username_key <> ?",
                (username_key, NOBODY_KEY),
            )
            return LoginStart(
                attempt_id,
                user,
                failures_by_user_and_address=[
                    r["failed_at"]
                    for r in failures
                    if r["username_key"] == username_key and r["address"] == address
                ],
                failures_by_user=[
                    r["failed_at"] for r in failures if r["username_key"] == username_key
                ],
                failures_by_address=[r["failed_at"] for r in failures if r["address"] == address],
            )

        # Alone: a wrong password ends the request, and its failure must stay recorded.
        return self.database.write(work, alone=True)

    def finish_login(
        self,
        attempt: LoginStart,
        username_key: str,
        token_hash: str | None,
        now: int,
        new_password_hash: str | None = None,
        end_sessions: bool = False,
    ) -> int | None:
        """End a login: with a token, clear the name's failures, store the session (returns its
        expiry) and, if given, replace the password hash (a cost upgrade, or with end_sessions
        a change of password that ends every other session); without one, forget an attempt
        refused before its password was checked. A wrong password needs no call: its attempt
        stays recorded as a failure. None, and nothing stored, if the password changed since
        start_login read it (the password just proven is no longer the member's)."""
        expires_at = now + self.config.session_ttl_s

        def work(tx: Tx) -> int | None:
            if token_hash is None or attempt.user is None:
                tx.run("DELETE FROM login_failures WHERE id = ?", (attempt.attempt_id,))
                return None
            # Writing the member's row orders this against a change of password on any node.
            # A concurrent cost upgrade also changes the hash; that rare login is just refused.
            claimed, _ = tx.run(
                "UPDATE users SET version = version + 1, password_hash = COALESCE(?, password_hash)"
                " WHERE id = ? AND password_hash = ?",
                (new_password_hash, attempt.user["id"], attempt.user["password_hash"]),
            )
            if claimed != 1:
                return None
            tx.run("DELETE FROM login_failures WHERE username_key = ?", (username_key,))
            if end_sessions:
                user_id = attempt.user["id"]
                tx.run("DELETE FROM sessions WHERE user_id = ?", (user_id,))
                tx.run("UPDATE users SET must_change_password = 0 WHERE id = ?", (user_id,))
                self._password_changed(tx, user_id, attempt.user["username"], now)
            self._insert_session(tx, attempt.user["id"], token_hash, now, expires_at)
            return expires_at

        # Forgetting a try (no token) stands alone; a login's session joins a keyed write.
        return self.database.write(work, alone=token_hash is None)

    def create_session(self, user_id: int, token_hash: str, now: int) -> int:
        """Store a session by the hash of its token; returns its expiry."""
        expires_at = now + self.config.session_ttl_s
        self.database.write(
            lambda tx: self._insert_session(tx, user_id, token_hash, now, expires_at)
        )
        return expires_at

    def _insert_session(
        self, tx: Tx, user_id: int, token_hash: str, now: int, expires_at: int
    ) -> None:
        tx.run("DELETE FROM sessions WHERE expires_at <= ?", (now,))
        tx.run(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (token_hash, user_id, now, expires_at),
        )

    def session_user(self, token_hash: str, now: int, causal: bool = False) -> Row | None:
        """The user of an unexpired session (with its expires_at), or None.

        causal: also see a session made a moment ago through another cluster node (resume).
        """
        return self.database.read(
            lambda tx: tx.row(
                f"{tx.causal if causal else ''}SELECT u.id, u.username, u.role, u.email,"
                " u.must_change_password, s.expires_at"
                " FROM sessions s JOIN users u ON u.id = s.user_id"
                " WHERE s.token_hash = ? AND s.expires_at > ?",
                (token_hash, now),
            )
        )

    def end_session(self, token_hash: str) -> None:
        """Delete a session so its token stops working."""
        self.database.write(
            lambda tx: tx.run("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
        )

    def set_email(self, user_id: int, email: str | None) -> Row:
        """Give the member an email address for notices, or take it away (None)."""

        def work(tx: Tx) -> Row:
            tx.run("UPDATE users SET email = ? WHERE id = ?", (email, user_id))
            found = tx.row("SELECT id, username, role, email FROM users WHERE id = ?", (user_id,))
            assert found is not None
            return found

        return self.database.write(work)

    def reset_password(self, username_key: str, password_hash: str, now: int) -> Row | None:
        """Give a member a temporary password they must change, ending every session; None if
        no such member."""

        def work(tx: Tx) -> Row | None:
            user = self._member_by_key(tx, username_key)
            if user is None:
                return None
            tx.run(
                "UPDATE users SET password_hash = ?, must_change_password = 1,"
                " version = version + 1 WHERE id = ?",
                (password_hash, user["id"]),
            )
            tx.run("DELETE FROM sessions WHERE user_id = ?", (user["id"],))
            self._password_changed(tx, user["id"], user["username"], now)
            return user

        return self.database.write(work)

    def _password_changed(self, tx: Tx, user_id: int, username: str, now: int) -> None:
        # The version just written tells one change from the next: a notice for each.
        version = tx.value("SELECT version FROM users WHERE id = ?", (user_id,))
        text = notice_texts.password_changed(username, now)
        self._notify(tx, user_id, "password_changed", f"{user_id}:{version}", text, now)

    def _member_by_key(self, tx: Tx, username_key: str) -> Row | None:
        return tx.row(
            f"SELECT id, username, role, email FROM users WHERE username_key = ?"
            f" AND username_key <> ?{tx.lock}",
            (username_key, NOBODY_KEY),
        )

    def account(self, user_id: int) -> Row:
        """What is held about a member's account itself (for my_data)."""
        found = self.database.read(
            lambda tx: tx.row(
                "SELECT id, username, role, email, created_at FROM users WHERE id = ?", (user_id,)
            )
        )
        assert found is not None
        return found
