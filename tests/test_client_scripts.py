"""The entry points and the README as a newcomer meets them: scripts/run and scripts/client make
the venv (and say so), the server's script says how to connect and stop, and the README's
commands are ones that work."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import client
from tests.test_client import MEMBER_PASSWORD, run_client
from tests.wire import PROJECT_DIR, ServerProcess

SETTING_UP = "Setting up Waymark's Python environment in .venv (first run only, about 20 s) ..."
HOW_TO_CONNECT = (
    "When it says 'listening', connect with scripts/client in another terminal; Ctrl-C stops it."
)
README = (PROJECT_DIR / "README.md").read_text(encoding="utf-8")
PROSE = " ".join(README.split())  # the README's words, however its lines wrap


def plain_environment(home: Path) -> dict[str, str]:
    """A shell's environment outside the venv: no WAYMARK_ settings, a private HOME."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("WAYMARK_")}
    return environ | {"HOME": str(home)}


def stub_project(tmp_path: Path) -> Path:
    """The three scripts beside a client.py and server.py that only say how they were started,
    and requirements with nothing to install: the venv bootstrap in seconds, without a network."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    for script in ("run", "client", "venv.sh"):
        shutil.copy2(PROJECT_DIR / "scripts" / script, project / "scripts" / script)
    (project / "requirements.txt").write_text("# nothing to install\n")
    for name in ("client", "server"):
        (project / f"{name}.py").write_text(
            f"import os, sys\nprint('{name}', sys.argv[1:], os.getcwd(), sys.prefix)\n"
        )
    return project


def test_scripts_client_makes_the_venv_once_says_so_and_keeps_the_folder(tmp_path: Path) -> None:
    project = stub_project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = subprocess.run(
        [str(project / "scripts" / "client"), "--json", "hello"],
        cwd=elsewhere, capture_output=True, text=True, env=plain_environment(tmp_path), timeout=180,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert first.stderr.startswith(SETTING_UP + "\n")
    assert first.stdout.startswith("client ['--json', 'hello'] ")
    assert f" {elsewhere} " in first.stdout  # a relative --cafile means the folder it ran in
    assert first.stdout.rstrip().endswith(str(project / ".venv"))  # the venv's own Python
    again = subprocess.run(
        [str(project / "scripts" / "client")],
        cwd=elsewhere, capture_output=True, text=True, env=plain_environment(tmp_path), timeout=60,
    )  # fmt: skip
    assert again.returncode == 0 and again.stderr == ""  # set up once, silent after


def test_scripts_run_says_how_to_connect_and_stop_only_when_serving(tmp_path: Path) -> None:
    project = stub_project(tmp_path)
    environ = plain_environment(tmp_path)
    run = str(project / "scripts" / "run")
    subprocess.run([run, "--help"], capture_output=True, env=environ, timeout=180, check=True)
    serving = subprocess.run([run, "--port", "0"], capture_output=True, text=True, env=environ)
    assert serving.stderr == HOW_TO_CONNECT + "\n"
    assert serving.stdout.startswith("server ['--port', '0'] ")
    for argv in (["--help"], ["create-admin", "ann"], ["import-walks", "walks.csv"]):
        quiet = subprocess.run([run, *argv], capture_output=True, text=True, env=environ)
        assert quiet.stderr == "", argv


def test_the_real_scripts_serve_and_connect(tmp_path: Path) -> None:
    """scripts/run serves, says how to connect before it listens, and stops on Ctrl-C;
    scripts/client reaches it."""
    environ = plain_environment(tmp_path) | {"WAYMARK_BCRYPT_COST": "4", "PYTHONUNBUFFERED": "1"}
    certs = tmp_path / "certs"
    server = subprocess.Popen(
        [str(PROJECT_DIR / "scripts" / "run"), "--port", "0", "--db", f"sqlite:///{tmp_path}/x.db",
         "--cert", str(certs / "server.crt"), "--key", str(certs / "server.key"),
         "--openlibrary-url", "http://127.0.0.1:9"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ,
    )  # fmt: skip
    try:
        assert server.stdout is not None and server.stderr is not None
        listening = server.stdout.readline()
        assert "listening on 127.0.0.1:" in listening
        port = listening.rstrip().rsplit(":", 1)[1]
        hello = subprocess.run(
            [str(PROJECT_DIR / "scripts" / "client"), "--port", port, "--cafile",
             str(certs / "server.crt"), "hello"],
            capture_output=True, text=True, env=environ, timeout=180,
        )  # fmt: skip
        assert hello.returncode == 0, hello.stderr
        assert "(protocol 1)" in hello.stdout
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C
        assert server.wait(timeout=30) == 0
    stderr = server.stderr.read()
    server.stdout.close()
    server.stderr.close()
    assert HOW_TO_CONNECT in stderr


# The README --------------------------------------------------------------------------------


def shell_lines() -> list[str]:
    """The commands in the README's sh blocks, without their comments."""
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    lines = [line.split("  #", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def test_the_readme_starts_things_with_the_scripts() -> None:
    lines = shell_lines()
    assert not [line for line in lines if re.match(r"(\S+=\S+ )*python3? ", line)]
    clients = [line for line in lines if "scripts/client" in line]
    assert len(clients) >= 4
    for line in clients:
        words = shlex.split(line)
        argv = words[words.index("scripts/client") + 1 :]
        client.build_parser().parse_args(argv)  # exits (failing the test) if it is not usable
    assert "`scripts/client --help` lists every subcommand" in PROSE
    assert "`scripts/run --help` lists them all" in PROSE


def test_the_readme_says_what_a_newcomer_needs() -> None:
    by_hand = PROSE.index("openssl s_client")
    assert "Ctrl-C to leave" in PROSE[by_hand - 200 : by_hand]
    assert "connect a client from another terminal with `scripts/client`. Ctrl-C stops" in PROSE
    assert "WAYMARK_TEST_PRIVATE_MYSQL=1" in PROSE
    assert "WAYMARK_TEST_PRIVATE_MYSQL" in (PROJECT_DIR / "scripts" / "test").read_text()
    assert "by its number or its title" in PROSE and "the copies default to 1" in PROSE
    assert "Request arguments (passwords, tokens) are never logged" not in PROSE
    assert "search terms" in PROSE


def test_search_terms_do_reach_the_log_as_the_readme_says(tmp_path: Path) -> None:
    # Open Library refuses the connection (port 9), so urllib3 retries and warns, quoting the URL.
    with ServerProcess(tmp_path, db_url=f"sqlite:///{tmp_path / 'log.db'}") as server:
        run_client(server, tmp_path, "register", "--user", "sam", password=MEMBER_PASSWORD)
        run_client(server, tmp_path, "orders", "--user", "sam", password=MEMBER_PASSWORD)
        run_client(server, tmp_path, "search-books", "zebra crossings")
        log = server.log()
    assert "zebra+crossings" in log
    assert MEMBER_PASSWORD not in log
