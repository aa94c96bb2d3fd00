"""Start-up checks: a file or setting that cannot work stops the server at once, with one
sentence that names it and no traceback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import seed
import tls
from tests.ports import unused_port
from tests.wire import PROJECT_DIR, TEST_BCRYPT_COST


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One certificate and key, made once, so that each start logs nothing about making one."""
    folder = tmp_path_factory.mktemp("pair")
    tls.ensure_certificate(folder / "server.crt", folder / "server.key")
    return folder / "server.crt", folder / "server.key"


@pytest.fixture
def certs(tmp_path: Path, pair: tuple[Path, Path]) -> Iterator[tuple[Path, Path]]:
    """A copy of the pair in this test's folder."""
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    shutil.copy(pair[0], cert)
    shutil.copy(pair[1], key)
    yield cert, key


def as_unprivileged() -> list[str]:
    """A command prefix under which file permissions bind, even for root (CI runs as root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "running as root, these tests need setpriv (util-linux) to drop privileges"
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def refused_start(*args: str, prefix: tuple[str, ...] = ()) -> tuple[int, str]:
    """Start server.py with args; it must exit by itself. Returns (exit code, stderr)."""
    command = [*prefix, sys.executable, str(PROJECT_DIR / "server.py"), "--port", "0", *args]
    env = {**os.environ, "WAYMARK_BCRYPT_COST": str(TEST_BCRYPT_COST)}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        stdout, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    assert "listening on" not in stdout, f"the server started; it should have refused:\n{stderr}"
    return process.returncode, stderr


def assert_one_sentence_naming(stderr: str, *names: object) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("server.py:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert errors[0].endswith("."), errors[0]
    for name in names:
        assert str(name) in errors[0], (name, errors[0])


def made_database(folder: Path) -> Path:
    """A database with the schema and the sample catalogue in it, as a first start leaves it."""
    path = folder / "w.db"
    seed.open_store(f"sqlite:///{path}").close()
    return path


def test_a_read_only_sqlite_database_is_refused_at_start(
    tmp_path: Path, certs: tuple[Path, Path]
) -> None:
    # It used to start, and then answer every register and login with internal.
    database = made_database(tmp_path)
    database.chmod(0o444)
    code, stderr = refused_start(
        "--db", f"sqlite:///{database}", "--cert", str(certs[0]), "--key", str(certs[1]),
        prefix=tuple(as_unprivileged()),
    )  # fmt: skip
    assert code != 0
    assert_one_sentence_naming(stderr, database, "read-only")
    assert len(stderr.splitlines()) == 1, stderr


def test_a_read_only_database_folder_is_refused_at_start(
    tmp_path: Path, certs: tuple[Path, Path]
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    database = made_database(folder)
    for leftover in folder.glob("w.db-*"):
        leftover.unlink()
    folder.chmod(0o555)
    try:
        code, stderr = refused_start(
            "--db", f"sqlite:///{database}", "--cert", str(certs[0]), "--key", str(certs[1]),
            prefix=tuple(as_unprivileged()),
        )  # fmt: skip
    finally:
        folder.chmod(0o755)
    assert code != 0
    assert_one_sentence_naming(stderr, folder, "read-only")


def test_a_folder_where_the_database_should_be_is_refused(
    tmp_path: Path, certs: tuple[Path, Path]
) -> None:
    (tmp_path / "w.db").mkdir()
    code, stderr = refused_start(
        "--db", f"sqlite:///{tmp_path / 'w.db'}", "--cert", str(certs[0]), "--key", str(certs[1])
    )
    assert code != 0
    assert_one_sentence_naming(stderr, tmp_path / "w.db", "folder")


def test_a_missing_database_folder_is_refused_and_not_created(
    tmp_path: Path, certs: tuple[Path, Path]
) -> None:
    database = tmp_path / "typo" / "w.db"
    code, stderr = refused_start(
        "--db", f"sqlite:///{database}", "--cert", str(certs[0]), "--key", str(certs[1])
    )
    assert code != 0
    assert_one_sentence_naming(stderr, database.parent, "does not exist")
    assert not database.parent.exists()


@pytest.mark.parametrize(
    "url",
    ["postgres://ann:s3cret@db.example/waymark", "sqlite://", "mysql://ann:s3cret@db.example/"],
)
def test_a_bad_db_url_is_refused_naming_the_setting_but_not_the_password(
    certs: tuple[Path, Path], url: str
) -> None:
    code, stderr = refused_start("--db", url, "--cert", str(certs[0]), "--key", str(certs[1]))
    assert code != 0
    assert_one_sentence_naming(stderr, "--db")
    assert "s3cret" not in stderr


def test_a_database_that_cannot_be_reached_is_named(certs: tuple[Path, Path]) -> None:
    port = unused_port()
    code, stderr = refused_start(
        "--db", f"mysql://root@127.0.0.1:{port}/waymark", "--cert", str(certs[0]),
        "--key", str(certs[1]),
    )  # fmt: skip
    assert code != 0
    assert_one_sentence_naming(stderr, "--db", f"127.0.0.1:{port}")


def test_a_certificate_that_is_not_one_is_named(tmp_path: Path, certs: tuple[Path, Path]) -> None:
    certs[0].write_text("not a certificate\n")
    code, stderr = refused_start(
        "--db", f"sqlite:///{tmp_path / 'w.db'}", "--cert", str(certs[0]), "--key", str(certs[1])
    )
    assert code != 0
    assert_one_sentence_naming(stderr, certs[0], "not a PEM certificate")


def test_an_unreadable_key_is_named(tmp_path: Path, certs: tuple[Path, Path]) -> None:
    certs[1].chmod(0)
    code, stderr = refused_start(
        "--db", f"sqlite:///{tmp_path / 'w.db'}", "--cert", str(certs[0]), "--key", str(certs[1]),
        prefix=tuple(as_unprivileged()),
    )  # fmt: skip
    assert code != 0
    assert_one_sentence_naming(stderr, certs[1], "cannot be read")


def test_a_key_without_its_certificate_is_never_overwritten(
    tmp_path: Path, certs: tuple[Path, Path]
) -> None:
    certs[0].unlink()
    before = certs[1].read_bytes()
    code, stderr = refused_start(
        "--db", f"sqlite:///{tmp_path / 'w.db'}", "--cert", str(certs[0]), "--key", str(certs[1])
    )
    assert code != 0
    assert_one_sentence_naming(stderr, certs[0], certs[1])
    assert certs[1].read_bytes() == before and not certs[0].exists()


def test_a_port_in_use_is_named(tmp_path: Path, certs: tuple[Path, Path]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        code, stderr = refused_start(
            "--db", f"sqlite:///{tmp_path / 'w.db'}", "--cert", str(certs[0]),
            "--key", str(certs[1]), "--port", str(port),
        )  # fmt: skip
    assert code != 0 and time.monotonic() - started < 30
    assert_one_sentence_naming(stderr, f"127.0.0.1:{port}", "--port", "in use")
