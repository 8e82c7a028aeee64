"""Run every benchmark, one after the other, and write ``docs/benchmarks.md``.

    .venv/bin/python bench/run_all.py [--postgres URL | --no-postgres] [--quick]
                                      [--out docs/benchmarks.md]

Each benchmark runs in its own process (never two at once), measures its reference in the
same run, prints its figures, and leaves a JSON file this script turns into the report:
figures, targets, machine, versions, load averages and the command. ``--quick`` runs
everything small (minutes, for trying the suite out; its figures are not the report's).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from common import DEFAULT_POSTGRES, LIBRARIES, ROOT, machine_info

BENCH = Path(__file__).resolve().parent


ONE_CORE_KINDS = "bare-reqwest,ccpush-sqlite-reqwest,ccpush-postgres-reqwest"


def plan(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """Each benchmark and its arguments; a name's part after ``:`` names one of several
    runs of the same benchmark."""
    pg = [] if args.no_postgres else ["--postgres", args.postgres]
    one_core = ["--cpu", "0", "--kinds", ONE_CORE_KINDS]
    if args.quick:
        return [
            ("throughput", ["--records", "5000", "--repeat", "1", *pg]),
            ("throughput:one-core", ["--records", "5000", "--repeat", "1", *one_core, *pg]),
            ("ingestion", ["--seconds", "2", "--repeat", "1"]),
            ("latency", ["--seconds", "10", "--reference-seconds", "3"]),
            ("isolation", ["--seconds", "20"]),
            ("apps", ["--apps", "2000", "--repeat", "1", *pg]),
            (
                "backlog",
                [
                    "--backlog",
                    "100000",
                    "--claims",
                    "5000",
                    "--repeat",
                    "1",
                    "--dispatch-seconds",
                    "5",
                    *pg,
                ],
            ),
        ]
    return [
        ("throughput", ["--records", "20000", "--repeat", "5", *pg]),
        ("throughput:one-core", ["--records", "20000", "--repeat", "5", *one_core, *pg]),
        ("ingestion", ["--seconds", "8", "--repeat", "3"]),
        ("latency", ["--seconds", "60", "--reference-seconds", "15"]),
        ("isolation", ["--seconds", "60"]),
        ("apps", [*pg]),
        ("backlog", ["--backlog", "1000000", "--repeat", "3", *pg]),
    ]


def run(name: str, arguments: list[str], workdir: Path) -> dict[str, Any]:
    """Run one benchmark, echoing and keeping its output; its results."""
    script = name.partition(":")[0]
    out = workdir / f"{name.replace(':', '-')}.json"
    command = [sys.executable, str(BENCH / f"{script}.py"), *arguments, "--json", str(out)]
    print(f"\n=== {name}: {shlex.join(['bench/' + script + '.py', *arguments])}", flush=True)
    began = time.monotonic()
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        if not line.startswith("machine: ") and not line.startswith("results written"):
            lines.append(line.rstrip("\n"))
    process.wait()
    if process.returncode != 0:
        raise SystemExit(f"{name} failed (exit {process.returncode})")
    results: dict[str, Any] = json.loads(out.read_text())
    return {
        "results": results,
        "output": "\n".join(lines),
        "seconds": time.monotonic() - began,
        "arguments": arguments,
    }


# The report


class Shape(NamedTuple):
    """How a throughput kind of ccpush ran, read from its name."""

    processes: int
    """Push processes or dispatcher processes; 0 with ``role`` None: one process."""
    role: str | None
    """``push`` (``-2proc``), ``dispatcher`` (``-2dispatchers``) or None."""
    reqwest: bool


def _shape(kind: str) -> Shape:
    """``ccpush-sqlite-2proc-reqwest`` -> Shape(2, "push", True)."""
    parts = kind.split("-")[2:]
    shape = Shape(0, None, "reqwest" in parts)
    for part in parts:
        for suffix, role in (("proc", "push"), ("dispatchers", "dispatcher")):
            if part.endswith(suffix):
                shape = shape._replace(processes=int(part.removesuffix(suffix)), role=role)
    return shape


def _config(kind: str) -> str:
    """How a throughput kind ran: "one process", "2 push processes", "2 dispatcher
    processes", each with ", reqwest" when reqwest made the requests."""
    shape = _shape(kind)
    how = f"{shape.processes} {shape.role} processes" if shape.role else "one process"
    return f"{how}, reqwest" if shape.reqwest else how


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def targets(runs: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    rows = []
    t = runs["throughput"]["results"]
    sqlite_ratio = t["ratios"]["ccpush-sqlite"]
    pinned = runs.get("throughput:one-core", {}).get("results", {}).get("ratios", {})
    for backend, target in (("sqlite", 0.85), ("postgres", 0.8)):
        ratios = {
            _config(kind): ratio
            for kind, ratio in t["ratios"].items()
            if kind.startswith(f"ccpush-{backend}")
        }
        if not ratios:
            continue
        ratios |= {
            _config(kind) + ", on one core": ratio
            for kind, ratio in pinned.items()
            if kind.startswith(f"ccpush-{backend}")
        }
        one, best = ratios["one process"], max(ratios.values())
        shown = "; ".join(f"{config} {ratio:.2f}" for config, ratio in ratios.items())
        name = {"sqlite": "SQLite", "postgres": "PostgreSQL"}[backend]
        if one >= target or best < target:
            met = verdict(one >= target)
        else:
            met = "met with " + "; ".join(
                config.removeprefix("one process, ")
                for config, ratio in ratios.items()
                if ratio >= target
            )
        rows.append((f"Throughput ccpush / bare aiohttp, {name} ≥ {target}", shown, met))
    rows.append(
        (
            "(pipeline issue) same ratio, one process ≥ 0.6",
            f"{sqlite_ratio:.2f}",
            verdict(sqlite_ratio >= 0.6),
        )
    )
    i = runs["ingestion"]["results"]["sqlite"]
    batch, single = i["batch"]["records_per_s"]["ccpush"], i["single"]["records_per_s"]["ccpush"]
    rows.append(
        (
            "Ingestion, batches of 100, SQLite ≥ 10,000 records/s",
            fmt(batch),
            verdict(batch >= 10_000),
        )
    )
    rows.append(
        (
            "Ingestion, single records, SQLite ≥ 2,500 records/s",
            fmt(single),
            verdict(single >= 2_500),
        )
    )
    lat = runs["latency"]["results"]["sqlite"]
    no_growth = lat["all_delivered"] and lat["waiting_when_load_stopped"] < lat["offered"] / 100
    rows.append(
        (
            "Latency at 1,000 records/s: p50 ≤ 10 ms",
            f"{lat['p50_ms']:.1f} ms",
            verdict(lat["p50_ms"] <= 10),
        )
    )
    rows.append(
        (
            "Latency at 1,000 records/s: p99 ≤ 50 ms",
            f"{lat['p99_ms']:.1f} ms",
            verdict(lat["p99_ms"] <= 50),
        )
    )
    rows.append(
        (
            "Latency at 1,000 records/s: no backlog growth",
            f"{lat['delivered']:,} of {lat['accepted']:,} delivered,"
            f" {lat['waiting_when_load_stopped']} waiting when the load stopped",
            verdict(no_growth),
        )
    )
    iso = runs["isolation"]["results"]
    rows.append(
        (
            "Isolation: healthy apps keep ≥ 0.9 of their throughput",
            f"{iso['throughput_ratio']:.3f}",
            verdict(iso["throughput_ratio"] >= 0.9),
        )
    )
    rows.append(
        (
            "Isolation: healthy apps' p99 ≤ 100 ms",
            f"{iso['faulty']['p99_ms']:.1f} ms",
            verdict(iso["faulty"]["p99_ms"] <= 100),
        )
    )
    b = runs["backlog"]["results"]
    size = f"{b['settings']['backlog']:,}"
    for backend in ("sqlite", "postgres"):
        if backend in b:
            rows.append(
                (
                    f"Backlog of {size} ({backend}): claim throughput ≥ 0.8 of empty",
                    f"{b[backend]['ratio']:.2f}",
                    verdict(b[backend]["ratio"] >= 0.8),
                )
            )
            rss = b[backend]["dispatcher"]["peak_rss_mb"]
            rows.append(
                (
                    f"Backlog of {size} ({backend}): dispatcher peak RSS ≤ 250 MB",
                    f"{rss:.0f} MB",
                    verdict(rss <= 250),
                )
            )
    return rows


def report(
    args: argparse.Namespace,
    runs: dict[str, dict[str, Any]],
    info: dict[str, Any],
    began: datetime,
    total: float,
) -> str:
    command = (
        ".venv/bin/python bench/run_all.py"
        + (
            " --no-postgres"
            if args.no_postgres
            else ("" if args.postgres == DEFAULT_POSTGRES else f" --postgres {args.postgres}")
        )
        + (" --quick" if args.quick else "")
    )
    commit = _git("rev-parse", "--short", "HEAD")
    changed = _git("status", "--porcelain", "--", ".", ":!docs/benchmarks.md")
    dirty = " (with uncommitted changes)" if changed else ""
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command}` on {began:%Y-%m-%d %H:%M} UTC, in {total / 60:.1f} minutes"
        f" (ccpush {info['ccpush']}, commit {commit}{dirty}).",
        "Every benchmark measures its reference in the same run; each one's full output is"
        " at the end. Loopback only; nothing else should run meanwhile (load averages are"
        " given, as other processes move the figures).",
        "",
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {info['cpu']}, {info['cpus']} cores |",
        f"| memory | {info['memory']} |",
        f"| system | {info['platform']} |",
        f"| Python | {info['python']} |",
        f"| SQLite | {info['sqlite']} |",
        f"| PostgreSQL | {info['postgresql']} (same machine) |",
        "| libraries | "
        + ", ".join(f"{name} {info[name]}" for name in LIBRARIES if name in info)
        + " |",
        "",
        "## Targets",
        "",
        "| target | figure | |",
        "|---|---|---|",
        *(f"| {name} | {figure} | {ok} |" for name, figure, ok in targets(runs)),
        "",
    ]
    lines += _throughput(runs["throughput"])
    lines += _why_throughput(runs["throughput"])
    if "throughput:one-core" in runs:
        lines += _one_core(runs["throughput:one-core"], runs["throughput"])
    lines += _ingestion(runs["ingestion"])
    lines += _latency(runs["latency"])
    lines += _isolation(runs["isolation"])
    lines += _backlog(runs["backlog"])
    lines += _apps(runs["apps"])
    lines += ["## Output", ""]
    for name, run in runs.items():
        lines += [
            f"<details><summary><code>bench/{name.partition(':')[0]}.py"
            f" {shlex.join(run['arguments'])}</code>"
            f" ({run['seconds'] / 60:.1f} min)</summary>",
            "",
            "```",
            run["output"].strip(),
            "```",
            "",
            "</details>",
            "",
        ]
    return "\n".join(lines)


def _load(results: dict[str, Any]) -> str:
    load = results.get("load_average", {})
    before, after = load.get("before"), load.get("after")
    if not before:
        return ""
    return f"Load average (1 min) {before[0]:.2f} before, {after[0]:.2f} after."


def _throughput(run: dict[str, Any]) -> list[str]:
    r = run["results"]
    return [
        "## Throughput: durable pushes/s against a bare aiohttp loop",
        "",
        f"`bench/throughput.py`: {r['settings']['records']:,} pushes a run, concurrency"
        f" {r['settings']['concurrency']} for both, claim batch {r['settings']['batch_size']},"
        f" {r['settings']['repeat']} rounds alternated, medians. The receiver (raw asyncio,"
        " uvloop) runs in its own process and answers 200 at once. `bare`: one aiohttp session"
        " POSTing the same ~1 KB body; `ccpush`: the real `Service` from start until every"
        " delivery is durably `delivered` (signed, with its 10 headers, attempt written). CPU"
        " is the benchmark process's, all threads. " + _load(r),
        "",
        *_rate_table(r),
        "",
    ]


def _rate_table(r: dict[str, Any]) -> list[str]:
    """Each kind's median rate, CPU per push, and ratio to the reference."""
    rows = [
        f"| {kind} | {fmt(r['medians_per_s'][kind])} |"
        f" {_ccpush_cpu(r, kind):.1f} |"
        + (
            f" {r['ratios'][kind]:.2f} (per round: {r['median_round_ratios'][kind]:.2f}) |"
            if kind in r["ratios"]
            else " reference |"
        )
        for kind in r["medians_per_s"]
    ]
    head = "| kind | pushes/s | µs CPU per push (its processes) | ratio to bare |"
    return [head, "|---|---:|---:|---|", *rows]


def _one_core(run: dict[str, Any], two_cores: dict[str, Any]) -> list[str]:
    r = run["results"]
    return [
        "### The same on one core",
        "",
        f"`bench/throughput.py --cpu {r['settings']['cpu']}`: the benchmark's process, where"
        " the reference and ccpush run in turn, held on one CPU and the receiver on the"
        " other, as `taskset -c 0 ccpush worker` holds a dispatcher (the PostgreSQL server is"
        " left free). The reference is one thread and loses nothing. With reqwest, ccpush's"
        " event loop and reqwest's thread hand requests and answers to each other: on one"
        " core they take turns; on two, a hand-off can wake the other core, and some runs"
        " fall into a slower way of working at more CPU per request. "
        + _runs_of("bare-reqwest", two_cores["results"], r)
        + " "
        + _load(r),
        "",
        *_rate_table(r),
        "",
    ]


def _runs_of(kind: str, two: dict[str, Any], one: dict[str, Any]) -> str:
    def each(results: dict[str, Any]) -> str:
        pairs = zip(results["per_s"][kind], results["cpu_us_per_push"][kind], strict=True)
        return ", ".join(f"{fmt(rate)}/s at {cpu:.0f} µs" for rate, cpu in pairs)

    if kind not in two.get("per_s", {}) or kind not in one.get("per_s", {}):
        return ""
    return f"`{kind}`, run by run: on two cores {each(two)}; on one core {each(one)}."


def _why_throughput(run: dict[str, Any]) -> list[str]:
    """Why the ratio stays where it is: what a push costs, from this run's figures."""
    r = run["results"]

    def median(key: str, kind: str) -> float:
        return float(statistics.median(r[key][kind]))

    bare = median("loop_cpu_us_per_push", "bare")
    headers = median("loop_cpu_us_per_push", "bare-headers")
    loop = median("loop_cpu_us_per_push", "ccpush-sqlite")
    busy = median("loop_busy", "ccpush-sqlite")
    total = median("cpu_us_per_push", "ccpush-sqlite")
    gil = loop / busy  # the loop's thread's time per push, running or waiting for the GIL
    room = bare / 0.85 - headers
    return [
        "### Why one process stays below 0.85, and what push processes and reqwest change",
        "",
        *_with_reqwest(r),
        *_with_dispatchers(r),
        *_with_push_processes(r),
        "Both sides are bound by one thread: the bare loop by its own, ccpush by the event"
        " loop's thread, and Python runs one thread at a time (the GIL). In this run:",
        "",
        f"- a bare push cost {bare:.1f} µs of CPU; with the 10 headers of the contract's push"
        f" (signature, ids, sequence, time zone...) {headers:.1f} µs: the request alone is"
        f" {r['ratios']['bare-headers']:.2f} of the reference's rate;",
        f"- a durable ccpush push cost {loop:.1f} µs on the event loop's thread, busy"
        f" {busy:.0%} of the time: the rest it waits for the GIL, taken by the store's thread"
        f" to decode claims and encode outcomes. That thread's time is"
        f" {total - loop:.1f} µs per push, most of it inside SQLite, outside the GIL;",
        f"- so a push costs ~{gil:.0f} µs of the one thread that can run Python, against"
        f" {bare:.1f} µs for the reference. A ratio of 0.85 allows {bare / 0.85:.1f} µs: after"
        f" the contract's request ({headers:.1f} µs) that leaves {max(room, 0):.1f} µs for"
        " everything ccpush adds (claim, sign, schedule, record the attempt, write it"
        f" durably), which took ~{gil - headers:.0f} µs in this run (table below).",
        "",
        "Where ccpush's own time goes (py-spy, `--threads`, same benchmark, 60,000 pushes;"
        " shares of the event loop's thread, approximate; profiled once, on an AMD EPYC"
        " machine where the whole came to ~24 µs: on another machine each part scales with"
        " it):",
        "",
        "| part | µs per push |",
        "|---|---:|",
        "| Standard Webhooks signing (HMAC-SHA256 over the 1 KB body) and the push's headers"
        " | ~5.5 |",
        "| the pushers' loop: apps' turns, fair shares, host caps, the retry decision, pace"
        " | ~8.5 |",
        "| the attempt's outcome: timing, the answer's excerpt, the guard's cached verdict"
        " | ~6.5 |",
        "| writing outcomes in batches, attempt listeners (metrics) | ~4 |",
        "| claiming (the loop's part) | ~0.5 |",
        "| waiting for the GIL: the store's thread's Python (~2.5) and the hand-offs between"
        " the two threads | ~7 |",
        "",
        "On PostgreSQL the store's work (asyncpg) runs on the event loop's thread itself, and"
        " the PostgreSQL server shares the machine's two cores with the receiver and the"
        " benchmark.",
        "",
    ]


def _with_reqwest(r: dict[str, Any]) -> list[str]:
    kinds = [kind for kind in r["ratios"] if kind.startswith("ccpush-") and "reqwest" in kind]
    if not kinds or "bare-reqwest" not in r["medians_per_s"]:
        return []
    own = r["medians_per_s"]["bare-reqwest"]
    lines = [
        "With `CCPUSH_HTTP_CLIENT=reqwest` the requests are made by reqwest (Rust, through"
        " pyreqwest) in its own thread: the Python side of a request is a few µs, and the"
        f" HTTP work runs outside the GIL. Its own bare loop (`bare-reqwest`) did {fmt(own)}"
        f" pushes/s, {r['ratios']['bare-reqwest']:.2f} times the aiohttp reference. The"
        " ratios stay against the aiohttp reference, as the target is set; against reqwest's"
        " own ceiling they are lower, and both are given:",
        "",
    ]
    servers = r.get("postgres_server_cpu_us_per_push", {})
    for kind in kinds:
        rate = r["medians_per_s"][kind]
        server = statistics.median(servers.get(kind) or [0.0])
        lines.append(
            f"- `{kind}`: {fmt(rate)} pushes/s, ratio {r['ratios'][kind]:.2f} to bare aiohttp,"
            f" {rate / own:.2f} to bare reqwest; {_ccpush_cpu(r, kind):.1f} µs of CPU per push"
            f" in {_processes_of(kind)}, all threads"
            + (f", and {server:.1f} µs in the PostgreSQL server;" if server else ";")
        )
    return [*lines, "", *_postgres_budget(r, servers)]


def _processes_of(kind: str) -> str:
    """Which processes a kind's CPU per push covers."""
    return {
        "dispatcher": "the dispatcher processes",
        "push": "the dispatcher's process and its push processes",
    }.get(_shape(kind).role or "", "the process")


def _ccpush_cpu(r: dict[str, Any], kind: str) -> float:
    """CPU per push of ccpush's processes: the benchmark's, and its children (push processes
    or dispatcher processes)."""
    children = r.get("push_process_cpu_us_per_push", {}).get(kind) or [0.0]
    return float(statistics.median(r["cpu_us_per_push"][kind]) + statistics.median(children))


def _with_dispatchers(r: dict[str, Any]) -> list[str]:
    """Scaling out on PostgreSQL: several dispatcher processes on one store."""
    kinds = [kind for kind in r["ratios"] if _shape(kind).role == "dispatcher"]
    lines = []
    for kind in kinds:
        count = _shape(kind).processes
        share = r["settings"]["concurrency"] // count
        lines += [
            f"`{kind}`: {count} dispatcher processes on the one PostgreSQL store, as"
            f" `ccpush worker` run {count} times scales out, each with {share} pushes in flight"
            f" ({r['settings']['concurrency']} in all, as the reference), reqwest: "
            f"{fmt(r['medians_per_s'][kind])} pushes/s, ratio {r['ratios'][kind]:.2f}"
            f" (per round {r['median_round_ratios'][kind]:.2f}). One process's claiming,"
            " signing, deciding and writing run on one core at a time; with two processes"
            " they run on both, beside the server and the receiver.",
            "",
        ]
    return lines


def _postgres_budget(r: dict[str, Any], servers: dict[str, list[float]]) -> list[str]:
    """What 0.8 of the reference leaves per push on two cores, against what was spent."""
    kind = "ccpush-postgres-reqwest"
    if not servers.get(kind) or not any(servers[kind]):
        return []
    budget = 2e6 / (0.8 * r["medians_per_s"]["bare"])
    own = statistics.median(r["cpu_us_per_push"][kind])
    server = statistics.median(servers[kind])
    receiver = statistics.median(r.get("receiver_cpu_us_per_push", {}).get(kind) or [0.0])
    return [
        "On PostgreSQL the server runs on the same two cores. At 0.8 of the reference the two"
        f" cores give {budget:.0f} µs per push to everything; in this run the dispatcher's"
        f" process took {own:.0f}, the server {server:.0f} and the receiver {receiver:.0f}:"
        f" {own + server + receiver:.0f} µs, with the kernel's work on top. With the cores"
        " this busy, each push waits longer for one, and with 64 pushes in flight on both"
        " sides, longer pushes are fewer pushes a second. The reference has no database"
        " sharing its machine.",
        "",
    ]


def _with_push_processes(r: dict[str, Any]) -> list[str]:
    kinds = [kind for kind in r["ratios"] if _shape(kind).role == "push"]
    if not kinds:
        return []
    lines = [
        "With `CCPUSH_PUSH_PROCESSES` the HTTP requests are made by child processes and the"
        " dispatcher's process keeps claiming, deciding and writing: the two halves run on"
        " the machine's two cores (shared with the receiver and, on PostgreSQL, the server)."
        " The reference is one aiohttp loop on one core. In this run:",
        "",
    ]
    for kind in kinds:
        loop = statistics.median(r["loop_cpu_us_per_push"][kind])
        children = statistics.median(r["push_process_cpu_us_per_push"][kind])
        lines.append(
            f"- `{kind}`: {fmt(r['medians_per_s'][kind])} pushes/s, ratio {r['ratios'][kind]:.2f};"
            f" {loop:.1f} µs per push on the dispatcher's event loop, {children:.1f} µs in the"
            " push processes (the requests, and the batches to and from them);"
        )
    return [
        *lines,
        "",
        "In one process:",
        "",
    ]


def _ingestion(run: dict[str, Any]) -> list[str]:
    r = run["results"]
    lines = [
        "## Ingestion: records/s accepted through the API",
        "",
        "`bench/ingestion.py`: `ccpush serve` as shipped (SQLite, access log off, no per-key"
        " rate limit), requests with a platform ingest key; closed loop, 64 clients for single"
        " records, 16 for batches of 100; every 202 is a commit (group commit). Reference:"
        " the same uvicorn/FastAPI stack answering 202 after parsing the JSON. Server CPU is"
        " per record. " + _load(r),
        "",
        "| shape | ccpush records/s | server µs CPU/record | reference records/s | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for shape in ("single", "batch"):
        s = r["sqlite"][shape]
        lines.append(
            f"| {shape} | {fmt(s['records_per_s']['ccpush'])} |"
            f" {fmt(s['server_cpu_us_per_record']['ccpush'])} |"
            f" {fmt(s['records_per_s']['reference'])} | {s['ratio']:.2f} |"
        )
    return [*lines, ""]


def _latency(run: dict[str, Any]) -> list[str]:
    r = run["results"]
    s, ref = r["sqlite"], r["reference"]
    return [
        "## End-to-end latency at 1,000 records/s",
        "",
        f"`bench/latency.py`: `ccpush serve` (SQLite, defaults), {r['settings']['apps']} apps,"
        f" single records sent open loop at {fmt(r['settings']['rate'])}/s for"
        f" {fmt(r['settings']['seconds'])} s; latency = arrival at the receiver - the moment the"
        " client read the 202 (one clock). Reference: the same generator POSTing straight to"
        " the receiver (one HTTP hop). " + _load(r),
        "",
        "| | p50 | p95 | p99 | max | records |",
        "|---|---:|---:|---:|---:|---:|",
        f"| ccpush (202 → arrival) | {s['p50_ms']:.1f} ms | {s['p95_ms']:.1f} ms |"
        f" {s['p99_ms']:.1f} ms | {s['max_ms']:.1f} ms | {s['count']:,} |",
        f"| reference (send → arrival) | {ref['p50_ms']:.1f} ms | {ref['p95_ms']:.1f} ms |"
        f" {ref['p99_ms']:.1f} ms | {ref['max_ms']:.1f} ms | {ref['count']:,} |",
        "",
        f"No backlog growth: {s['delivered']:,} of {s['accepted']:,} accepted records delivered"
        f" ({s['missing']} missing, {s['duplicates']} twice),"
        f" {s['waiting_when_load_stopped']} still waiting when the load stopped; p99 over the"
        f" first 10 s {s['p99_first_10s_ms']:.1f} ms, over the last 10 s"
        f" {s['p99_last_10s_ms']:.1f} ms. The 202 itself took p50"
        f" {s['ingest_answer_p50_ms']:.1f} ms, p99 {s['ingest_answer_p99_ms']:.1f} ms; the"
        f" server used {fmt(s['server_cpu_us_per_record'])} µs CPU per record (ingestion"
        f" and push), peak RSS {s['server_peak_rss_mb']:.0f} MB.",
        "",
    ]


def _isolation(run: dict[str, Any]) -> list[str]:
    r = run["results"]
    st = r["settings"]
    rows = []
    for name in ("healthy", "faulty"):
        x = r[name]
        rows.append(
            f"| {name} | {x['healthy_per_s']:.1f} | {x['healthy_delivered']:,} of"
            f" {x['healthy_offered']:,} | {x['p50_ms']:.1f} ms | {x['p99_ms']:.1f} ms |"
            f" {x['max_ms']:.1f} ms |"
        )
    return [
        "## Isolation: healthy apps beside hanging and slow receivers",
        "",
        f"`bench/isolation.py`: `ccpush serve` (SQLite, defaults: concurrency 128, 64 per host,"
        f" push timeout 15 s), {st['apps']} apps, each its own receiver port; in the `faulty`"
        f" run {st['hanging']} receivers never answer and {st['slow']} answer after"
        f" {st['slow_delay']:g} s; the reference run (`healthy`) has none. Single records,"
        f" open loop, {fmt(st['rate'])}/s over all apps for {fmt(st['seconds'])} s. Figures"
        f" for the {r['healthy']['healthy_apps']} apps healthy in both runs. " + _load(r),
        "",
        "| run | healthy apps' records/s | delivered | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Healthy apps keep {r['throughput_ratio']:.3f} of their throughput. Pushes the faulty"
        f" run's receivers saw: {r['faulty']['arrivals_by_behaviour']}.",
        "",
    ]


def _backlog(run: dict[str, Any]) -> list[str]:
    r = run["results"]
    lines = [
        "## Backlog: a million pending deliveries",
        "",
        f"`bench/backlog.py`: {r['settings']['backlog']:,} pending deliveries (100 apps, one in"
        " ten a retry, 1 KB records) written with direct SQL; claims of 256 as the dispatcher"
        f" makes them, {r['settings']['claims']:,} deliveries a run, against a store holding"
        " only those (`empty`, the reference), kinds alternated. Then `Service` dispatches"
        f" over the backlog for {r['settings']['dispatch_seconds']:g} s in its own process: its"
        " peak resident memory. " + _load(r),
        "",
        "| backend | claims/s, backlog | claims/s, empty | ratio | claims+completions ratio |"
        " claim p50 / p99 (backlog) | dispatcher peak RSS |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for backend in ("sqlite", "postgres"):
        if backend not in r:
            continue
        x = r[backend]
        lines.append(
            f"| {backend} | {fmt(x['backlog']['claims_per_s'])} |"
            f" {fmt(x['empty']['claims_per_s'])} | {x['ratio']:.2f} | {x['cycle_ratio']:.2f} |"
            f" {x['backlog']['claim_p50_ms']:.1f} / {x['backlog']['claim_p99_ms']:.1f} ms |"
            f" {x['dispatcher']['peak_rss_mb']:.0f} MB |"
        )
    return [*lines, ""]


def _apps(run: dict[str, Any]) -> list[str]:
    r = run["results"]
    st = r["settings"]
    lines = [
        "## Many apps: claiming when most apps are idle",
        "",
        f"`bench/apps.py`: the same work ({st['busy']} apps with 200 due deliveries each)"
        f" in a store of {st['few']} apps (`few`, the reference) and one of {st['apps']:,}"
        f" (`many`); claims of {st['claim']} as under light load, {st['claims']} a run,"
        f" {st['repeat']} rounds, medians. The claim finds the apps with work along the"
        " lanes' indexes, so idle apps should cost it nothing. " + _load(r),
        "",
        f"| backend | claim p50, {st['few']} apps | claim p50, {st['apps']:,} apps | ratio |",
        "|---|---:|---:|---:|",
    ]
    for backend in ("sqlite", "postgres"):
        if backend in r:
            x = r[backend]
            lines.append(
                f"| {backend} | {x['few_ms']:.2f} ms | {x['many_ms']:.2f} ms | {x['ratio']:.2f} |"
            )
    return [*lines, ""]


def _git(*arguments: str) -> str:
    try:
        return subprocess.run(
            ["git", *arguments], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", metavar="URL", default=DEFAULT_POSTGRES)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--quick", action="store_true", help="small runs, to try the suite")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    began = datetime.now(UTC)
    start = time.monotonic()
    info = machine_info()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    with tempfile.TemporaryDirectory(prefix="ccpush-bench-") as workdir:
        runs = {name: run(name, arguments, Path(workdir)) for name, arguments in plan(args)}
    text = report(args, runs, info, began, time.monotonic() - start)
    args.out.write_text(text + "\n")
    print(f"\nreport written to {os.path.relpath(args.out, ROOT)}")
    for name, figure, ok in targets(runs):
        print(f"  {name}: {figure} ({ok.strip('*')})")


if __name__ == "__main__":
    main()
