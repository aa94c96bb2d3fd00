"""Where server.py's time goes under load: py-spy samples, summed by function.

    .venv/bin/python -m bench.profile_check [--clients 32] [--seconds 10] [--gil] [--tree DIR]

Starts server.py on a fresh SQLite database, drives search_walks ("peak") from --clients
closed-loop TLS connections, records the server with py-spy (as root, or with ptrace allowed)
and prints the functions with the most samples: "own" is the function itself running, "total"
is it or anything it called. With --gil only the thread holding the GIL is sampled: where the
one core of Python goes. --tree runs another checkout's server.py (an older commit, to compare
before and after) under the same load.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.wire import PROJECT_DIR, ServerProcess  # noqa: E402

WARM_UP_S = 2.0
_LINE_NUMBER = re.compile(r":\d+\)$")


class TreeServer(ServerProcess):
    """server.py from another checkout, with this one's test settings."""

    def __init__(self, tree: Path, workdir: Path, db_url: str):
        super().__init__(workdir, db_url=db_url)
        self.tree = tree

    def command(self, *args: str) -> list[str]:
        """The same command line, with the other checkout's server.py."""
        command = super().command(*args)
        command[1] = str(self.tree / "server.py")
        return command


def summarise(raw: str, top: int) -> list[str]:
    """py-spy's raw stacks ("frame;frame;... count") as the top functions, own and total."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
        frames = [frame for frame in frames if not frame.startswith("process ")]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    rows = [f"{samples:,} samples"]
    rows.append(f"{'own %':>6} {'total %':>7}  function (file)")
    for frame, count in own.most_common(top):
        rows.append(f"{100 * count / samples:6.1f} {100 * total[frame] / samples:7.1f}  {frame}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--gil", action="store_true", help="sample only the GIL's holder")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--tree", type=Path, default=PROJECT_DIR, help="the checkout to run")
    options = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy is missing: pip install -r requirements-bench.txt", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp())
    server = TreeServer(options.tree.resolve(), workdir, f"sqlite:///{workdir / 'bench.db'}")
    server.start()
    assert server.process is not None
    stopping = threading.Event()
    answered = [0] * options.clients

    def load(index: int) -> None:
        with server.client() as client:
            while not stopping.is_set():
                client.call("search_walks", area="peak")
                answered[index] += 1

    threads = [threading.Thread(target=load, args=(n,)) for n in range(options.clients)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(WARM_UP_S)
        before, started = sum(answered), time.monotonic()
        raw = workdir / "profile.txt"
        command = [
            py_spy, "record", "--pid", str(server.process.pid), "--duration",
            str(int(options.seconds)), "--rate", "200", "--format", "raw", "--output", str(raw),
            *(["--gil"] if options.gil else []),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=options.seconds + 60)
        rate = (sum(answered) - before) / (time.monotonic() - started)
    finally:
        stopping.set()
        for thread in threads:
            thread.join()
        server.stop()
    print(f"{options.tree}: {rate:,.0f} search_walks/s from {options.clients} connections")
    print("\n".join(summarise(raw.read_text(), options.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
