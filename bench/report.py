"""The results as plain-text tables, one report per mode."""

from __future__ import annotations

from typing import Any

from bench.pool_check import POOL_ROUNDS

# The login-storm tables' columns after the phase (and, in the burst check, the concurrency).
STORM_COLUMNS = (
    "searches/s", "search p50 ms", "search p99 ms", "logins/s", "login p50 ms", "login p99 ms",
    "server cpu%", "errors",
)  # fmt: skip


def number(value: float | None, digits: int = 1) -> str:
    """A number for a table, '-' when missing."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def stats_cells(label: str, stats: dict[str, Any]) -> list[str]:
    """Table cells for one OpStats."""
    return [
        label,
        f"{stats['requests']:,}",
        number(stats["per_s"]),
        number(stats["p50_ms"], 2),
        number(stats["p99_ms"], 2),
        str(stats["errors"]),
    ]


STAGE_HEADERS = ["stage", "requests", "req/s", "p50 ms", "p99 ms", "errors"]
CPU_HEADERS = ["server cpu%", "server us/req", "bench cpu%", "bench us/req", "machine cpu%"]


def stage_rows(stage: dict[str, Any]) -> list[list[str]]:
    """A stage's overall row, then one row per operation when the mix has several."""
    cpu = stage["cpu"]
    cpu_cells = [
        number(cpu["server_pct"], 0),
        number(cpu["server_us_per_request"], 0),
        number(cpu["bench_pct"], 0),
        number(cpu["bench_us_per_request"], 0),
        number(cpu["machine_pct"], 0),
    ]
    name = stage["name"] + (" (capped)" if stage["capped"] else "")
    rows = [stats_cells(name, stage["overall"]) + cpu_cells]
    if len(stage["ops"]) > 1:
        blank = [""] * len(cpu_cells)
        rows += [stats_cells(f"  {op}", stats) + blank for op, stats in stage["ops"].items()]
    return rows


def describe_driver(driver: dict[str, Any]) -> str:
    kind = "C extension" if driver["HAVE_CEXT"] else "pure Python"
    return f"{driver['package']} {driver['version']}, HAVE_CEXT={driver['HAVE_CEXT']} ({kind})"


def load_report(result: dict[str, Any]) -> str:
    meta = result["meta"]
    weights = " : ".join(f"{op} {w}" for op, w in meta["mix_weights"].items())
    rows = [row for stage in result["stages"] for row in stage_rows(stage)]
    ratios = result["ratios"]
    lines = [
        f"Waymark load: mix {meta['mix']} ({weights}), {meta['clients']} clients,"
        f" {meta['seconds']:g} s per stage after a {meta['warmup_s']:g} s warm-up",
        f"database: {meta['db']}; MySQL driver: {describe_driver(meta['mysql_driver'])}",
        f"server.py logged: data in {meta['server_data']}",
        f"server: bcrypt cost {meta['bcrypt_cost']}, hash_concurrency {meta['hash_concurrency']},"
        f" pool_size {meta['server_pool_size']}; Python {meta['python']}, {meta['cpus']} CPUs",
        "",
        table(STAGE_HEADERS + CPU_HEADERS, rows),
        "",
        f"server/transport: {number(ratios['server/transport']['per_s'], 2)}x req/s,"
        f" {number(ratios['server/transport']['p50'], 2)}x p50",
        f"server/db:        {number(ratios['server/db']['per_s'], 2)}x req/s,"
        f" {number(ratios['server/db']['p50'], 2)}x p50",
        "cpu: server process (the echo server in the transport stage) and bench process as % of"
        " one core and CPU µs per request; machine as % of all cores.",
    ]
    if "login" in meta["mix_weights"]:
        lines.append(
            "The db stage's login is its Store calls only; the server's also runs bcrypt"
            f" at cost {meta['bcrypt_cost']} (see --bcrypt-check)."
        )
    lines += [
        f"first error in {s['name']}: {s['first_error']}"
        for s in result["stages"]
        if s["first_error"]
    ]
    return "\n".join(lines)


def pool_report(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        f"Pooled checkout on MySQL {meta['server_version']} at {meta['db']};"
        f" driver {describe_driver(meta['mysql_driver'])}",
        f"{meta['cycles']:,} cycles of checkout + SELECT 1 + return per variant,"
        f" interleaved in {POOL_ROUNDS} rounds; Python {meta['python']}, {meta['cpus']} CPUs",
    ]
    headers = ["variant", "cycles/s", "p50 us", "p99 us", "overhead p50 us", "admin cmds/cycle"]
    for run in result["runs"]:
        rows = [
            [
                name,
                number(v["per_s"], 0),
                number(v["p50_us"], 0),
                number(v["p99_us"], 0),
                number(v["overhead_p50_us"], 0),
                number(v["admin_commands_per_cycle"], 2),
            ]
            for name, v in run["variants"].items()
        ]
        lines += ["", f"{run['threads']} thread(s):", table(headers, rows)]
    lines += [
        "",
        "overhead = p50 of the cycle minus p50 of SELECT 1 on a connection already held.",
        "admin cmds/cycle = the server's Com_admin_commands (pings, session resets) per cycle.",
    ]
    return "\n".join(lines)


def bcrypt_report(result: dict[str, Any]) -> str:
    meta = result["meta"]
    rates = [
        [str(r["threads"]), str(r["hashes"]), number(r["per_s"], 2), number(r["ms_per_hash"], 0)]
        for r in result["hash_rates"]
    ]
    phases = []
    for phase in result["burst"]:
        logins = phase["logins"] or {}
        phases.append(
            [
                phase["phase"],
                str(phase["hash_concurrency"]) if phase["login_clients"] else "-",
                number(phase["reads"]["per_s"]),
                number(phase["reads"]["p50_ms"], 2),
                number(phase["reads"]["p99_ms"], 2),
                number(logins.get("per_s"), 2),
                number(logins.get("p50_ms"), 0),
                number(logins.get("p99_ms"), 0),
                number(phase["cpu"]["server_pct"], 0),
                str(phase["errors"]),
            ]
        )
    first = result["burst"][-1]
    return "\n".join(
        [
            f"bcrypt {meta['bcrypt']} at cost {meta['cost']}, {meta['cpus']} CPUs,"
            f" Python {meta['python']}",
            "",
            table(["threads", "hashes", "hashes/s", "ms/hash (per thread)"], rates),
            "",
            f"Login burst through server.py ({meta['db']}, bcrypt cost {meta['cost']},"
            f" {meta['seconds']:g} s per phase): {first['readers']} clients running"
            f" search_walks beside {first['login_clients']} clients logging in;"
            f" default hash_concurrency here is {meta['default_hash_concurrency']}.",
            "",
            table(
                ["phase", "hash conc.", *STORM_COLUMNS],
                phases,
            ),
        ]
    )


SUITE_HEADERS = ["op", "conns", "target", "requests", "req/s", "p50 ms", "p99 ms", "errors"]
SUITE_CPU_HEADERS = ["server cpu%", "server us/req", "bench cpu%", "machine cpu%"]


def suite_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """One line per stage, grouped by operation and connection count, Waymark first."""
    lines = []
    previous = None
    for row in sorted(rows, key=lambda r: (r["op"], r["connections"])):  # stable: Waymark first
        group = (row["op"], row["connections"])
        first = group != previous
        previous = group
        stats, cpu = row["overall"], row["cpu"]
        lines.append(
            [
                op_name(row["op"]) if first else "",
                str(row["connections"]) if first else "",
                row["target"],
                *stats_cells("", stats)[1:],
                number(cpu["server_pct"], 0),
                number(cpu["server_us_per_request"], 0),
                number(cpu["bench_pct"], 0),
                number(cpu["machine_pct"], 0),
            ]
        )
    return lines


def op_name(op: str) -> str:
    return "search_walks peak" if op == "search_peak" else op


def ratio_rows(ratios: list[dict[str, Any]], ceilings: list[str]) -> list[list[str]]:
    """waymark ÷ ceiling per operation and connection count: req/s, and p99 in brackets."""

    def cell(value: dict[str, Any] | None) -> str:
        if value is None:
            return ""
        return f"{number(value['per_s'], 2)}x ({number(value['p99'], 1)}x)"

    return [
        [op_name(r["op"]), str(r["connections"]), *(cell(r.get(c)) for c in ceilings)]
        for r in sorted(ratios, key=lambda r: (r["op"], r["connections"]))
    ]


def storm_rows(storm: dict[str, Any]) -> list[list[str]]:
    rows = []
    for phase in storm["phases"]:
        searches, logins = phase["searches"] or {}, phase["logins"] or {}
        rows.append(
            [
                phase["phase"],
                number(searches.get("per_s")),
                number(searches.get("p50_ms"), 2),
                number(searches.get("p99_ms"), 2),
                number(logins.get("per_s"), 2),
                number(logins.get("p50_ms"), 0),
                number(logins.get("p99_ms"), 0),
                number(phase["cpu"]["server_pct"], 0),
                str(phase["errors"]),
            ]
        )
    return rows


def idle_rows(idle: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            i["target"],
            f"{i['connections']:,}",
            number(i["open_s"], 1),
            number(i["connect_and_first_answer_p50_ms"], 1),
            number(i["rss_mb_before"], 1),
            number(i["rss_mb_after"], 1),
            number(i["rss_kb_per_connection"], 1),
            f"{i['threads_before']} -> {i['threads_after']}",
            number(i["cpu_pct_before"], 1),
            number(i["cpu_pct_after"], 1),
            str(i["errors"]),
        ]
        for i in idle
    ]


def suite_report(result: dict[str, Any]) -> str:
    meta = result["meta"]
    plan = meta["plan"]
    peer = ", ".join(f"{name} {version}" for name, version in meta["peer_packages"].items())
    lines = [
        f"Waymark performance suite{' (smoke)' if meta['smoke'] else ''}, started"
        f" {meta['started']}: {meta['seconds']:g} s per stage after a {meta['warmup_s']:g} s"
        f" warm-up; Python {meta['python']}, {meta['cpus']} CPUs; load average"
        f" {meta['load_average_before'][0]:.1f} before, {meta['load_average_after'][0]:.1f} after",
        f"MySQL driver: {describe_driver(meta['mysql_driver'])}; peer: {peer}",
    ]
    for database in result["databases"]:
        settings, storm = database["settings"], database["storm"]
        ceilings = ["waymark/echo", "waymark/peer", "waymark/peer-snapshot", "waymark/store"]
        lines += [
            "",
            f"== {database['db']} ==",
            f"server.py: data in {database['server_data']}; pool_size {settings['pool_size']},"
            f" hash_concurrency {settings['hash_concurrency']}",
            f"peer: {database['peer']}; peer-snapshot: {database.get('peer_snapshot')}",
            "",
            "Sweep: each connection is a closed-loop client; search_walks asks for area peak.",
            table(SUITE_HEADERS + SUITE_CPU_HEADERS, suite_rows(database["sweep"])),
            "",
            "Ratios, Waymark / ceiling: req/s (p99 in brackets). peer loads the walks on every"
            " call; peer-snapshot searches the same 1 s snapshot as Waymark.",
            table(["op", "conns", *ceilings], ratio_rows(database["sweep_ratios"], ceilings)),
            "",
            "Buying: one copy per order; Waymark / the FastAPI peer running the same transaction,"
            " and Waymark / direct Store, in the last columns.",
            table(
                SUITE_HEADERS + SUITE_CPU_HEADERS + BUY_RATIOS,
                [
                    row + cells
                    for row, cells in zip(
                        suite_rows(database["buy"]),
                        buy_ratio_cells(database),
                        strict=True,
                    )
                ],
            ),
            "",
            "Fair peers: Waymark beside FastAPI doing the same work (search_walks: the same 1 s"
            " snapshot; buy: the same transaction); the ratios are Waymark / peer.",
            table(FAIR_HEADERS, fair_rows(database.get("fair_peer", []))),
            "",
            f"Login storm: {storm['readers']} clients searching beside {storm['logins']} clients"
            f" logging in non-stop at bcrypt cost {storm['bcrypt_cost']},"
            f" hash_concurrency {storm['hash_concurrency']}; {storm['seconds']:g} s per phase.",
            table(
                ["phase", *STORM_COLUMNS],
                storm_rows(storm),
            ),
            "",
            f"Idle: {plan['idle_connections']:,} TLS connections, each answered once, then silent"
            f" for {plan['idle_seconds']:g} s; a fresh server process each.",
            table(
                [
                    "server",
                    "conns",
                    "open s",
                    "new conn ms",
                    "RSS MB before",
                    "RSS MB after",
                    "KB/conn",
                    "threads",
                    "idle cpu% (0 conns)",
                    "idle cpu% (open)",
                    "errors",
                ],  # fmt: skip
                idle_rows(database["idle"]),
            ),
            "new conn ms: TCP + TLS handshake + the first answer, p50 of connections opened one"
            " at a time; KB/conn: RSS growth per open connection.",
        ]
    lines += [
        "",
        "cpu: server process (the echo server or the peer in their stages) and bench process as %"
        " of one core; machine as % of all cores.",
        f"files: {meta['files']['json']} and {meta['files']['png']}",
    ]
    lines += [f"PROBLEM: {problem}" for problem in result["problems"]]
    return "\n".join(lines)


BUY_RATIOS = ["waymark/peer-snapshot", "waymark/store"]
FAIR_HEADERS = [
    "op", "conns", "waymark req/s", "waymark p99 ms", "peer req/s", "peer p99 ms",
    "req/s ratio", "p99 ratio",
]  # fmt: skip


def buy_ratio_cells(database: dict[str, Any]) -> list[list[str]]:
    """The waymark/peer-snapshot and waymark/store req/s ratios beside each buy row (Waymark's
    row only)."""
    by_connections = {r["connections"]: r for r in database["buy_ratios"]}
    cells = []
    for row in sorted(database["buy"], key=lambda r: (r["op"], r["connections"])):
        found = by_connections.get(row["connections"], {}) if row["target"] == "waymark" else {}
        values = [found.get(name) for name in BUY_RATIOS]
        cells.append([f"{number(value['per_s'], 2)}x" if value else "" for value in values])
    return cells


def fair_rows(fair: list[dict[str, Any]]) -> list[list[str]]:
    """Waymark and the peer doing the same work: req/s and p99 of each, and their ratios."""
    return [
        [
            op_name(f["op"]),
            str(f["connections"]),
            number(f["waymark_per_s"]),
            number(f["waymark_p99_ms"], 2),
            number(f["peer_per_s"]),
            number(f["peer_p99_ms"], 2),
            f"{number(f['per_s'], 2)}x",
            f"{number(f['p99'], 2)}x",
        ]
        for f in sorted(fair, key=lambda f: (f["op"] != "search_peak", f["connections"]))
    ]
