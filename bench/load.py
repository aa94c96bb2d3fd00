"""Waymark's load bench from the command line: run one mode, print its report (bench/README.md).

python bench/load.py [--db sqlite|mysql|URL] [--clients 16] [--seconds 10]
                     [--mix read|buy|login|mixed] [--bcrypt-cost 12] [--json]
python bench/load.py --pool-check [--db mysql|URL] [--clients 16] [--cycles 2000]
python bench/load.py --bcrypt-check [--db sqlite|mysql|URL] [--clients 16] [--seconds 5]
python bench/load.py --suite [--db sqlite --db mysql|URL] [--seconds 5] [--out bench/results]
python bench/load.py --smoke [--db sqlite --db mysql|URL]
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

# Run as a script, Python puts bench/ itself first on sys.path. Put the project there instead, so
# that the package imports as `bench` and no bench module can shadow another module.
BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(BENCH_DIR.parent))

from bench import report  # noqa: E402
from bench.options import parse_options  # noqa: E402

# Each mode's module has run(options) -> dict. It is imported only when its mode runs, so the
# modes other than --suite need only the project's own requirements, not requirements-bench.txt.
RUNNERS = {
    "load": "bench.stages",
    "pool": "bench.pool_check",
    "bcrypt": "bench.bcrypt_check",
    "suite": "bench.suite",
}
REPORTS = {
    "load": report.load_report,
    "pool": report.pool_report,
    "bcrypt": report.bcrypt_report,
    "suite": report.suite_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the mode the command line asks for; 1 if it could not run or --smoke found a problem."""
    options = parse_options(argv)
    try:
        runner = importlib.import_module(RUNNERS[options.mode])
    except ModuleNotFoundError as error:
        print(
            f"bench/load.py: {error}; this mode needs the bench's requirements:"
            " .venv/bin/pip install -r requirements-bench.txt (scripts/bench does it)",
            file=sys.stderr,
        )
        return 1
    try:
        result = runner.run(options)
    except (RuntimeError, ValueError) as error:  # a server that did not start, a bad setting
        print(f"bench/load.py: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if options.json else REPORTS[options.mode](result))
    for problem in result.get("problems", []):
        print(f"bench/load.py: {problem}", file=sys.stderr)
    return 1 if result.get("problems") else 0


if __name__ == "__main__":
    sys.exit(main())
