"""Waymark's load bench from the command line: run one mode, print its report (bench/README.md).

python bench/load.py [--db sqlite|mysql|URL] [--clients 16] [--seconds 10]
                     [--mix read|buy|login|mixed] [--bcrypt-cost 12] [--json]
python bench/load.py --pool-check [--db mysql|URL] [--clients 16] [--cycles 2000]
python bench/load.py --bcrypt-check [--db sqlite|mysql|URL] [--clients 16] [--seconds 5]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

# Run as a script, Python puts bench/ itself first on sys.path. Put the project there instead, so
# that the package imports as `bench` and no bench module can shadow another module.
BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(BENCH_DIR.parent))

from bench import bcrypt_check, pool_check, report, stages  # noqa: E402
from bench.options import parse_options  # noqa: E402

RUNNERS = {"load": stages.run_load, "pool": pool_check.run, "bcrypt": bcrypt_check.run}
REPORTS = {"load": report.load_report, "pool": report.pool_report, "bcrypt": report.bcrypt_report}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the mode the command line asks for; 1 if a server did not start or a setting is bad."""
    options = parse_options(argv)
    try:
        result = RUNNERS[options.mode](options)
    except (RuntimeError, ValueError) as error:  # a server that did not start, a bad setting
        print(f"bench/load.py: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if options.json else REPORTS[options.mode](result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
