"""A three-node MariaDB Galera cluster on 127.0.0.1, for the cluster tests and scripts/cluster.

Each node is one `mariadbd --no-defaults` with every option on its command line, a directory of
its own (data, socket, pid file, error log) under one cluster directory, and four free loopback
ports: MySQL, the Galera group channel, IST and SST. Node 1 bootstraps the cluster
(--wsrep-new-cluster); the others join one at a time and copy its data by rsync SST. The cluster
is ready when every running node says Synced and counts every running node.

Node N's group channel listens on 127.0.0.N, and Galera binds the connections a node opens to
the others to that address too, so a firewall rule can tell node 3's traffic from node 1's on
one machine (tests/faults.py cuts a node off that way). Everything else stays on 127.0.0.1.

pytest uses the session fixture `galera_cluster` (import it into a test module). The shell uses
`scripts/cluster start|stop|status|kill N|restart N|pause N|resume N|partition N|heal|restart-all`,
which keeps its cluster in $WAYMARK_CLUSTER_DIR (default /tmp/waymark-cluster) so that later
commands find it; pointing WAYMARK_TEST_GALERA at that directory makes the tests use it instead
of starting their own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mysql.connector
import pytest

from tests.ports import unused_ports

if TYPE_CHECKING:
    from tests.faults import Firewall

PROVIDER_PATHS = (
    "/usr/lib/galera/libgalera_smm.so",
    "/usr/lib/libgalera_smm.so",
    "/usr/lib64/galera-4/libgalera_smm.so",
    "/usr/lib64/galera/libgalera_smm.so",
)
STATE_FILE = "cluster.json"
DEFAULT_CLI_DIR = "/tmp/waymark-cluster"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
# After a lost quorum, how long the restarted nodes get to re-form the primary component alone.
RECOVER_ALONE_S = 30.0
# Replication never leaves the machine: every address a node listens on or announces is this,
# except its group channel's (group_host: 127.0.0.N, still loopback).
HOST = "127.0.0.1"


class ClusterError(Exception):
    """The cluster could not be set up, started or reached; the message says why in a sentence."""


@dataclass
class Node:
    """One mariadbd of the cluster: its directory, its four ports and its process id."""

    number: int
    directory: Path
    port: int
    group_port: int
    ist_port: int
    sst_port: int
    pid: int | None = None
    # 127.0.0.N for clusters made now; a cluster made before per-node addresses has HOST.
    group_host: str = HOST

    @property
    def url(self) -> str:
        """mysql://root@127.0.0.1:PORT/ (root has no password on a test cluster)."""
        return f"mysql://root@{HOST}:{self.port}/"

    @property
    def datadir(self) -> Path:
        return self.directory / "data"

    @property
    def error_log(self) -> Path:
        return self.directory / "error.log"

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of the node's error log, for a failure message."""
        for path in (self.error_log, self.directory / "mariadbd.out"):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()
                if text:
                    return "\n".join(text[-lines:])
        return "(no log)"


@dataclass(frozen=True)
class Software:
    """Where the programs a node needs are on this machine."""

    server: str
    install_db: str
    provider: str


def find_software() -> tuple[Software | None, list[str]]:
    """The programs found, or None and the Debian packages that would bring the missing ones."""
    server = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/libexec")
    install_db = shutil.which("mariadb-install-db")
    provider = next((path for path in PROVIDER_PATHS if Path(path).exists()), None)
    missing = []
    if provider is None:
        missing.append("galera-4")
    if shutil.which("rsync") is None:
        missing.append("rsync")
    if server is None or install_db is None or shutil.which("wsrep_sst_rsync") is None:
        missing.append("mariadb-server")
    if missing or server is None or install_db is None or provider is None:
        return None, missing
    return Software(server, install_db, provider), []


def ensure_software() -> Software:
    """The programs, installed with apt-get when missing and we are root; else ClusterError."""
    software, missing = find_software()
    if software is None and os.geteuid() == 0 and shutil.which("apt-get"):
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", *missing],
        ):
            subprocess.run(command, env=environment, capture_output=True, timeout=900, check=False)
        software, missing = find_software()
    if software is None:
        named = " and ".join([", ".join(missing[:-1]), missing[-1]] if missing[1:] else missing)
        raise ClusterError(
            f"The Galera cluster needs {named}, which this machine lacks: install"
            f" {'them' if missing[1:] else 'it'} (Debian/Ubuntu: apt-get install"
            f" {' '.join(missing)})."
        )
    return software


def run_as_account() -> str | None:
    """The account the nodes run as: mysql when we are root, else our own (None)."""
    if os.geteuid() != 0:
        return None
    # Not as root: the joiner's rsync SST daemon, started by a root mariadbd, drops to "nobody",
    # which may not write the joiner's data directory, so the joiner never gets its copy.
    try:
        pwd.getpwnam("mysql")
    except KeyError:
        raise ClusterError(
            "As root the cluster's nodes run as the mysql account, and there is none:"
            " install mariadb-server, which creates it, or run as another user."
        ) from None
    return "mysql"


def _give_to(path: Path, account: str | None) -> None:
    if account is not None:
        entry = pwd.getpwnam(account)
        os.chown(path, entry.pw_uid, entry.pw_gid)


class GaleraCluster:
    """Three (or more) Galera nodes on loopback: create, start, stop, kill -9 and restart."""

    def __init__(self, directory: Path, nodes: list[Node], software: Software, account: str | None):
        self.directory = directory
        self.nodes = nodes
        self.software = software
        self.account = account

    # -- making and finding one ---------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path | None = None, size: int = 3) -> GaleraCluster:
        """A new cluster in directory (a new temporary one by default), not yet started."""
        software = ensure_software()
        account = run_as_account()
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="waymark-galera-"))
        directory.mkdir(parents=True, exist_ok=True)
        # The nodes' account must reach its node directories; mkdtemp makes 0700.
        directory.chmod(0o755)
        ports = unused_ports(4 * size)
        nodes = []
        for number in range(1, size + 1):
            port, group, ist, sst = ports[4 * (number - 1) : 4 * number]
            node = Node(
                number, directory / f"node{number}", port, group, ist, sst,
                group_host=f"127.0.0.{number}",
            )  # fmt: skip
            node.directory.mkdir()
            _give_to(node.directory, account)
            nodes.append(node)
        cluster = cls(directory, nodes, software, account)
        cluster.save()
        return cluster

    @classmethod
    def load(cls, directory: Path) -> GaleraCluster:
        """The cluster whose state `save` wrote in directory; ClusterError if there is none."""
        try:
            state = json.loads((directory / STATE_FILE).read_text())
        except (OSError, ValueError):
            raise ClusterError(f"There is no cluster in {directory}.") from None
        nodes = [Node(**{**node, "directory": Path(node["directory"])}) for node in state["nodes"]]
        return cls(directory, nodes, Software(**state["software"]), state["account"])

    def save(self) -> None:
        """Write ports and process ids, so that another process can stop or inspect the cluster."""
        state = {
            "software": asdict(self.software),
            "account": self.account,
            "nodes": [{**asdict(node), "directory": str(node.directory)} for node in self.nodes],
        }
        path = self.directory / STATE_FILE
        path.write_text(json.dumps(state, indent=2) + "\n")

    def node(self, number: int) -> Node:
        """Node number (1-based)."""
        return self.nodes[number - 1]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    # -- starting and stopping ----------------------------------------------------------------

    def start(self, timeout_s: float = START_TIMEOUT_S, first: int = 1) -> float:
        """Initialise node `first` if new, bootstrap it, join the others one by one; returns the
        seconds taken.

        Raises ClusterError, with the failing node's log, when a node dies or is not in time.
        """
        started = time.monotonic()
        deadline = started + timeout_s
        founder = self.node(first)
        if not founder.datadir.exists():
            self._install_db(founder)
        self._launch(founder, bootstrap=True)
        self.wait_synced([founder], deadline)
        joined = [founder]
        for node in self.nodes:
            if node is founder:
                continue
            # One joiner at a time: two joining at once make the group re-form for seconds, and
            # a donor serves one rsync SST at a time anyway.
            self._launch(node, bootstrap=False)
            joined.append(node)
            self.wait_synced(joined, deadline)
        return time.monotonic() - started

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Shut every node down (SIGTERM, then SIGKILL after timeout_s)."""
        for node in self.nodes:
            self._signal(node, signal.SIGTERM)
            self._signal(node, signal.SIGCONT)  # a paused node acts on SIGTERM only once resumed
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            if not self._wait_gone(node, deadline):
                self._signal(node, signal.SIGKILL)
                self._wait_gone(node, time.monotonic() + 10)
            node.pid = None
        self.save()

    def remove(self) -> None:
        """Delete the cluster directory (data and logs); stop first."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def kill(self, number: int) -> None:
        """kill -9 one node, as a crash would, and wait until it is gone."""
        node = self.node(number)
        self._signal(node, signal.SIGKILL)
        if not self._wait_gone(node, time.monotonic() + 10):
            raise ClusterError(f"Node {number} (pid {node.pid}) did not die on SIGKILL.")
        node.pid = None
        self.save()

    def restart(self, number: int, timeout_s: float = START_TIMEOUT_S) -> float:
        """Start a stopped or killed node again; it rejoins (IST, else SST). Returns seconds."""
        started = time.monotonic()
        node = self.node(number)
        if self.running(node):
            raise ClusterError(f"Node {number} is still running.")
        # A node that comes back before the others have evicted its killed self (evs timeouts,
        # about 6 s) makes the group re-form again and again: rejoining then takes 25 s, not 5.
        others = [n for n in self.nodes if self.running(n)]
        self.wait_synced(others, started + timeout_s)
        self._launch(node, bootstrap=False)
        self.wait_synced([*others, node], started + timeout_s)
        return time.monotonic() - started

    def pause(self, number: int) -> None:
        """SIGSTOP one node: it holds its connections and answers nothing, as a stalled VM would."""
        node = self.node(number)
        if not self.running(node):
            raise ClusterError(f"Node {number} is not running, so it cannot be paused.")
        assert node.pid is not None
        os.kill(node.pid, signal.SIGSTOP)

    def resume(self, number: int) -> None:
        """SIGCONT a paused node; the others may have evicted it, and then it rejoins by IST."""
        node = self.node(number)
        if node.pid is not None and self.running(node):
            os.kill(node.pid, signal.SIGCONT)

    def kill_together(self, numbers: list[int], within_s: float = 1.0) -> None:
        """kill -9 several nodes, spread over within_s seconds (a rack losing power)."""
        gap = within_s / max(len(numbers), 1)
        for index, number in enumerate(numbers):
            if index:
                time.sleep(gap)
            self._signal(self.node(number), signal.SIGKILL)
        for number in numbers:
            node = self.node(number)
            if not self._wait_gone(node, time.monotonic() + 10):
                raise ClusterError(f"Node {number} (pid {node.pid}) did not die on SIGKILL.")
            node.pid = None
        self.save()

    def recover(self, numbers: list[int], timeout_s: float = START_TIMEOUT_S) -> tuple[float, str]:
        """Start killed nodes again after the survivors lost quorum; (seconds, how it went).

        The killed nodes come back with the view they last saw in a primary component
        (gvwstate.dat, pc.recovery), so with the survivors they usually re-form it on their
        own, then catch up. Only if no survivor is primary after RECOVER_ALONE_S is the one with
        the most recent commit made primary by hand (pc.bootstrap), as an operator would; a
        killed node that then does not join it is started again. Raises ClusterError when the
        cluster is not whole and Synced by the deadline.
        """
        started = time.monotonic()
        deadline = started + timeout_s
        for number in numbers:
            if self.running(self.node(number)):
                raise ClusterError(f"Node {number} is still running.")
        for number in numbers:
            self._launch(self.node(number), bootstrap=False)
        survivors = [node for node in self.nodes if node.number not in numbers]
        try:
            self.wait_synced(self.nodes, min(deadline, time.monotonic() + RECOVER_ALONE_S))
            return time.monotonic() - started, "re-formed on its own"
        except ClusterError:
            if any(self._primary(node) for node in survivors):
                # Re-formed, and still catching up (a state transfer under load): a bootstrap by
                # hand now would split the joiners off again.
                self.wait_synced(self.nodes, deadline)
                return time.monotonic() - started, "re-formed on its own, slowly"
        chosen = max(
            survivors, key=lambda n: int((self.status(n) or {}).get("wsrep_last_committed", -1))
        )
        self.set_provider_option(chosen, "pc.bootstrap=YES")
        how = f"node {chosen.number} bootstrapped by hand"
        try:
            self.wait_synced(self.nodes, min(deadline, time.monotonic() + RECOVER_ALONE_S))
            return time.monotonic() - started, how
        except ClusterError:
            stuck = [n for n in numbers if not self._primary(self.node(n))]
        for number in stuck:
            self.kill(number)
        for number in stuck:
            self.restart(number, deadline - time.monotonic())
        return time.monotonic() - started, f"{how}; nodes {stuck} started again to join it"

    def _primary(self, node: Node) -> bool:
        """True when the node answers and is in a primary component."""
        return (self.status(node) or {}).get("wsrep_cluster_status") == "Primary"

    def restart_all(self, timeout_s: float = START_TIMEOUT_S) -> float:
        """Stop every node, one after another, and start the cluster again; returns seconds."""
        started = time.monotonic()
        self.stop_in_turn()
        first = self.safe_to_bootstrap()
        self.start(timeout_s - (time.monotonic() - started), first=first.number)
        return time.monotonic() - started

    def stop_in_turn(self) -> None:
        """Shut the nodes down one after another (SIGTERM, each gone before the next).

        The others stay primary as each leaves, and the last to leave marks itself safe to
        bootstrap (grastate.dat): it has every commit, so the cluster starts again from it.
        """
        for node in self.nodes:
            self._signal(node, signal.SIGTERM)
            if not self._wait_gone(node, time.monotonic() + STOP_TIMEOUT_S):
                raise ClusterError(
                    f"Node {node.number} did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM;"
                    f" the end of its log:\n{node.log_tail()}"
                )
            node.pid = None
        self.save()

    def safe_to_bootstrap(self) -> Node:
        """The stopped node that left the cluster last (safe_to_bootstrap: 1 in grastate.dat)."""
        for node in self.nodes:
            state = node.datadir / "grastate.dat"
            if state.exists() and "safe_to_bootstrap: 1" in state.read_text():
                return node
        raise ClusterError(
            "No node is marked safe to bootstrap (grastate.dat): the cluster did not stop"
            " cleanly. Start the node with the highest seqno by hand (mariadbd --wsrep-recover)."
        )

    def set_provider_option(self, node: Node, option: str) -> None:
        """SET GLOBAL wsrep_provider_options on one node (e.g. pc.bootstrap=YES)."""
        connection = mysql.connector.connect(
            host=HOST, port=node.port, user="root", connection_timeout=5, read_timeout=10
        )
        try:
            connection.cursor().execute("SET GLOBAL wsrep_provider_options = %s", (option,))
        finally:
            connection.close()

    # -- state --------------------------------------------------------------------------------

    def running(self, node: Node) -> bool:
        """True while the node's mariadbd process lives (a zombie counts as dead)."""
        if node.pid is None:
            return False
        try:
            # Our own child: alive until reaped here, and its pid cannot be reused before.
            return os.waitpid(node.pid, os.WNOHANG)[0] == 0
        except ChildProcessError:
            pass  # started by another process (scripts/cluster start): look it up instead
        try:
            stat = Path(f"/proc/{node.pid}/stat").read_text()
            cmdline = Path(f"/proc/{node.pid}/cmdline").read_bytes()
        except OSError:
            return False
        # The pid must still be our mariadbd, not a later process that reused the number.
        return stat.rsplit(")", 1)[1].split()[0] != "Z" and str(node.datadir).encode() in cmdline

    def status(self, node: Node) -> dict[str, str] | None:
        """The node's wsrep status variables, or None when it does not answer."""
        try:
            connection = mysql.connector.connect(
                host=HOST, port=node.port, user="root", connection_timeout=2, read_timeout=5
            )
        except mysql.connector.Error:
            return None
        try:
            cursor = connection.cursor()
            cursor.execute("SHOW GLOBAL STATUS LIKE 'wsrep%'")
            return {str(name): str(value) for name, value in cursor.fetchall()}
        except mysql.connector.Error:
            return None
        finally:
            connection.close()

    def wait_synced(self, nodes: list[Node], deadline: float) -> None:
        """Wait until each node is Synced in a primary cluster of exactly len(nodes) members."""
        while True:
            summary = []
            for node in nodes:
                if not self.running(node):
                    raise ClusterError(
                        f"Galera node {node.number} exited while starting; the end of its log"
                        f" ({node.error_log}):\n{node.log_tail()}"
                    )
                status = self.status(node) or {}
                state = status.get("wsrep_local_state_comment", "not answering")
                size = status.get("wsrep_cluster_size", "?")
                summary.append((node, state, size, status.get("wsrep_cluster_status")))
            if all(
                state == "Synced" and size == str(len(nodes)) and primary == "Primary"
                for _, state, size, primary in summary
            ):
                return
            if time.monotonic() > deadline:
                described = "; ".join(
                    f"node {node.number} {state}, cluster size {size}"
                    for node, state, size, _ in summary
                )
                slowest = next(node for node, state, _, _ in summary if state != "Synced")
                raise ClusterError(
                    f"The Galera cluster was not ready in time ({described}); the end of node"
                    f" {slowest.number}'s log ({slowest.error_log}):\n{slowest.log_tail()}"
                )
            time.sleep(0.2)

    # -- processes ----------------------------------------------------------------------------

    def _install_db(self, node: Node) -> None:
        command = [
            self.software.install_db, "--no-defaults", f"--datadir={node.datadir}",
            "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve",
            # The bootstrap server must make the InnoDB files the nodes will use.
            "--innodb-log-file-size=8M", "--innodb-buffer-pool-size=32M",
        ]  # fmt: skip
        if self.account is not None:
            command.append(f"--user={self.account}")
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise ClusterError(
                f"mariadb-install-db could not initialise {node.datadir}:\n{done.stderr[-2000:]}"
            )

    def command(self, node: Node, bootstrap: bool) -> list[str]:
        """The node's full mariadbd command line; nothing comes from an option file."""
        members = ",".join(f"{n.group_host}:{n.group_port}" for n in self.nodes)
        provider_options = ";".join(
            [
                f"base_port={node.group_port}",
                # Without this Galera listens on every interface. A node's own loopback address
                # is also the source of every group connection it opens (see the module's text).
                f"gmcast.listen_addr=tcp://{node.group_host}:{node.group_port}",
                f"ist.recv_addr={HOST}:{node.ist_port}",
                # Enough history for a killed node to catch up by IST after a minute of load.
                "gcache.size=32M",
            ]
        )
        command = [
            self.software.server, "--no-defaults",
            f"--datadir={node.datadir}", f"--socket={node.directory / 'mysql.sock'}",
            f"--pid-file={node.directory / 'mariadbd.pid'}", f"--log-error={node.error_log}",
            f"--port={node.port}", f"--bind-address={HOST}", "--skip-name-resolve",
            # What Galera requires of every node.
            "--binlog-format=ROW", "--default-storage-engine=InnoDB",
            "--innodb-autoinc-lock-mode=2", "--wsrep-on=ON",
            "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=8M",
            # Write and flush the redo log at every commit. With 2 a commit sits for up to a
            # second in the OS's cache, which a machine crash or power cut loses (with 0, in
            # mariadbd's own buffer, which kill -9 loses). The other nodes are meant to hold it,
            # but when nodes go down one soon after another the last copy can be in a cache
            # that died: Jepsen's 2026 analysis of MariaDB Galera found acknowledged commits
            # lost so, without a flush at each commit. tests/test_faults.py kills two nodes
            # within a second and restarts the whole cluster; production nodes should use 1.
            "--innodb-flush-log-at-trx-commit=1", "--innodb-doublewrite=0",
            "--performance-schema=OFF", "--skip-log-bin",
            f"--wsrep-provider={self.software.provider}", "--wsrep-cluster-name=waymark",
            f"--wsrep-node-name=node{node.number}", f"--wsrep-node-address={HOST}",
            f"--wsrep-node-incoming-address={HOST}:{node.port}",
            f"--wsrep-cluster-address=gcomm://{members}",
            f"--wsrep-provider-options={provider_options}",
            "--wsrep-sst-method=rsync", f"--wsrep-sst-receive-address={HOST}:{node.sst_port}",
        ]  # fmt: skip
        if self.account is not None:
            command.append(f"--user={self.account}")
        if bootstrap:
            command.append("--wsrep-new-cluster")
        return command

    def _launch(self, node: Node, bootstrap: bool) -> None:
        node.datadir.mkdir(exist_ok=True)
        _give_to(node.datadir, self.account)
        command = self.command(node, bootstrap)
        output = str(node.directory / "mariadbd.out")
        appending = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        # posix_spawn in a session of its own, not Popen: a node may outlive this process
        # (scripts/cluster start), and a Popen still running when collected counts as a leak.
        node.pid = os.posix_spawn(
            command[0],
            command,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, output, appending, 0o644),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,
        )
        self.save()

    def _signal(self, node: Node, sig: int) -> None:
        if node.pid is not None and self.running(node):
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, sig)

    def _wait_gone(self, node: Node, deadline: float) -> bool:
        while self.running(node):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


# -- pytest ------------------------------------------------------------------------------------


@dataclass
class _Shared:
    """The session's one cluster, and how many fixture instances use it."""

    cluster: GaleraCluster
    owned: bool  # made here (stopped and removed after), not a `scripts/cluster start` one
    users: int = 0


# pytest makes one instance of a session fixture per test module that imports it, so
# test_cluster.py and test_faults.py would each start a cluster; they share this one instead.
_shared: list[_Shared] = []


@pytest.fixture(scope="session")
def galera_cluster() -> Iterator[GaleraCluster]:
    """A running three-node cluster for the session; one that cannot start fails, never skips.

    With WAYMARK_TEST_GALERA set to a `scripts/cluster start` directory, that cluster is used
    (and left running); otherwise a new one is made in a temporary directory and removed after
    the last module that uses it.
    """
    if not _shared:
        existing = os.environ.get("WAYMARK_TEST_GALERA")
        try:
            if existing:
                cluster = GaleraCluster.load(Path(existing))
                cluster.wait_synced(cluster.nodes, time.monotonic() + 10)
            else:
                cluster = GaleraCluster.create()
                try:
                    seconds = cluster.start()
                except ClusterError:
                    cluster.stop()
                    cluster.remove()
                    raise
                print(f"\nGalera: 3 nodes Synced in {seconds:.1f} s ({cluster.directory})")
        except ClusterError as error:
            pytest.fail(str(error), pytrace=False)
        _shared.append(_Shared(cluster, owned=not existing))
    shared = _shared[0]
    shared.users += 1
    try:
        yield shared.cluster
    finally:
        shared.users -= 1
        if shared.users == 0:
            _shared.clear()
            if shared.owned:
                shared.cluster.stop()
                shared.cluster.remove()


# -- the command line (scripts/cluster) --------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """scripts/cluster: start, stop, inspect and hurt the shell's cluster."""
    parser = argparse.ArgumentParser(
        prog="scripts/cluster",
        description="A three-node MariaDB Galera cluster on 127.0.0.1, for trying Waymark on.",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("WAYMARK_CLUSTER_DIR", DEFAULT_CLI_DIR)),
        help="where the cluster lives [WAYMARK_CLUSTER_DIR; default %(default)s]",
    )
    commands = parser.add_subparsers(dest="action", required=True)
    commands.add_parser("start", help="make and start the cluster; print its three URLs")
    commands.add_parser("status", help="each node's URL and state; exit 1 unless all are Synced")
    commands.add_parser("stop", help="stop the cluster and delete its data")
    for name, text in (
        ("kill", "kill -9 one node"),
        ("restart", "start a killed node again"),
        ("pause", "stop one node with SIGSTOP (it answers nothing)"),
        ("resume", "continue a paused node (SIGCONT)"),
        ("partition", "cut one node off from the others with iptables (root)"),
    ):
        commands.add_parser(name, help=text).add_argument("node", type=int, choices=(1, 2, 3))
    commands.add_parser("heal", help="remove the partition's iptables rules")
    commands.add_parser("restart-all", help="stop every node in turn, then start the cluster again")
    args = parser.parse_args(argv)
    try:
        return _run(args.action, args.dir, getattr(args, "node", 0))
    except ClusterError as error:
        print(error, file=sys.stderr)
        return 1


def _run(action: str, directory: Path, number: int) -> int:
    if action == "start":
        if (directory / STATE_FILE).exists():
            cluster = GaleraCluster.load(directory)
            if any(cluster.running(node) for node in cluster.nodes):
                print(f"A cluster is already running in {directory}:")
                return _print_status(cluster)
            cluster.remove()
        cluster = GaleraCluster.create(directory)
        try:
            seconds = cluster.start()
        except ClusterError:
            cluster.stop()
            raise
        print(f"Galera cluster: 3 nodes Synced in {seconds:.1f} s, in {directory}")
        for url in cluster.urls:
            print(url)
        print(f"(the tests use it with WAYMARK_TEST_GALERA={directory})")
        return 0
    if action == "heal":
        _firewall().remove()
        print("partition healed: the WAYMARK_FAULTS rules are gone")
        return 0
    cluster = GaleraCluster.load(directory)
    if action == "stop":
        if os.geteuid() == 0 and shutil.which("iptables"):
            _firewall().remove()  # a partition left in place would outlive its cluster
        cluster.stop()
        cluster.remove()
        print(f"stopped; {directory} removed")
        return 0
    if action == "partition":
        firewall = _firewall()
        firewall.install()
        firewall.cut(cluster, number)
        print(f"node {number} cut off from the others; `scripts/cluster heal` ends it")
        return 0
    if action in ("pause", "resume"):
        (cluster.pause if action == "pause" else cluster.resume)(number)
        print(f"node {number} {action}d")
        return 0
    if action == "restart-all":
        seconds = cluster.restart_all()
        print(f"every node stopped and Synced again in {seconds:.1f} s")
        return 0
    if action == "kill":
        cluster.kill(number)
        print(f"node {number} killed")
        return 0
    if action == "restart":
        seconds = cluster.restart(number)
        print(f"node {number} Synced again in {seconds:.1f} s")
        return 0
    return _print_status(cluster)


def _firewall() -> Firewall:
    """The fault harness's firewall (tests/faults.py), or ClusterError saying what is missing."""
    from tests.faults import FaultError, Firewall  # faults imports this module: import late

    try:
        return Firewall()
    except FaultError as error:
        raise ClusterError(str(error)) from None


def _print_status(cluster: GaleraCluster) -> int:
    synced = True
    for node in cluster.nodes:
        status = cluster.status(node) if cluster.running(node) else None
        if status is None:
            state = "running, not answering" if cluster.running(node) else "not running"
        else:
            state = (
                f"{status.get('wsrep_local_state_comment')},"
                f" cluster size {status.get('wsrep_cluster_size')}"
            )
        synced = synced and state.startswith("Synced")
        print(f"{node.url}  node {node.number}: {state}")
    return 0 if synced else 1


if __name__ == "__main__":
    sys.exit(main())
