"""Records accepted per second through the ingestion API, against the bare HTTP stack.

    .venv/bin/python bench/ingestion.py [--seconds 8] [--repeat 3] [--postgres URL]
                                        [--json PATH]

Two servers, each in its own process, on loopback:

* ``ccpush``: ``ccpush serve`` as shipped (API and dispatcher, SQLite; PostgreSQL too with
  ``--postgres``), access log off (``CCPUSH_LOG_LEVEL=WARNING``), no per-key rate limit
  (``CCPUSH_KEY_RATE_LIMIT=0``: the default, 1,000 requests/s per key, would be the limit
  measured); requests carry a platform ingest key, as a call center's would (each is
  looked up in the store). Each 202 means the records are durably stored: validated, authenticated,
  written with their deliveries in a committed transaction (group commit). The app has
  no push address, so its records are held: this measures ingestion, not pushing.
* ``reference``: the same stack (uvicorn, FastAPI, uvloop, httptools) with one route that
  parses the JSON body and answers 202 (``bench/ref_server.py``): the stack's ceiling.

A closed-loop load generator (aiohttp, this process) sends single records (64 clients) or
batches of 100 (16 clients), every record with its own ``callSessionId``, for ``--seconds``
after a 1 s warm-up; the kinds alternate, ``--repeat`` rounds; medians are reported, with
the server's CPU time per record.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from common import (
    CcpushServer,
    create_apps,
    free_port,
    ingest_key,
    load_average,
    process_cpu,
    record_json,
    run_benchmark,
    store_url,
    with_load,
)

SINGLE_CLIENTS = 64
BATCH_CLIENTS = 16
BATCH = 100
MARK = b"9999999"


def body_maker(batch: int, prefix: bytes) -> Any:
    """Request bodies with fresh session ids (``prefix`` and a counter): one record, or an
    array of ``batch``."""
    template = record_json(int(MARK)).replace(b'"callSessionId":"', b'"callSessionId":"' + prefix)
    assert template.count(MARK) >= 1
    counter = itertools.count()
    if batch == 1:
        return lambda: template.replace(MARK, b"%07d" % (next(counter) % 10_000_000))
    return lambda: (
        b"["
        + b",".join(
            template.replace(MARK, b"%07d" % (next(counter) % 10_000_000)) for _ in range(batch)
        )
        + b"]"
    )


async def load(
    url: str, batch: int, clients: int, seconds: float, prefix: bytes, token: str
) -> dict[str, Any]:
    """Closed loop: ``clients`` workers POST until the time is up; records accepted per
    second in the measured window (after a 1 s warm-up)."""
    make = body_maker(batch, prefix)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    accepted = 0
    counting = False
    stop = False
    errors: list[str] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal accepted
        while not stop:
            async with session.post(url, data=make(), headers=headers) as response:
                answer = await response.read()
                if response.status != 202:
                    errors.append(f"{response.status} {answer[:200]!r}")
                    return
                if counting:
                    accepted += batch

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(worker(session)) for _ in range(clients)]
        await asyncio.sleep(1.0)
        counting = True
        began = time.perf_counter()
        await asyncio.sleep(seconds)
        counting = False
        elapsed = time.perf_counter() - began
        stop = True
        await asyncio.gather(*tasks)
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
    return {"records": accepted, "seconds": elapsed, "per_s": accepted / elapsed}


async def measure(args: argparse.Namespace, backend: str, postgres: str) -> dict[str, Any]:
    ref_port = free_port()
    reference = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).with_name("ref_server.py")), str(ref_port)
    )
    try:
        async with store_url(backend, postgres) as (url, data_dir):
            with CcpushServer(url, data_dir) as server:
                return await _measure(args, backend, server, ref_port, reference.pid)
    finally:
        reference.terminate()
        await reference.wait()


async def _measure(
    args: argparse.Namespace, backend: str, server: CcpushServer, ref_port: int, ref_pid: int
) -> dict[str, Any]:
    await _wait_for_port(ref_port)
    async with aiohttp.ClientSession() as session:
        [app_id] = await create_apps(session, server.base, [None])
        token = await ingest_key(session, server.base)
    targets = {
        "reference": (f"http://127.0.0.1:{ref_port}/v1/apps/x/call-records", ref_pid),
        "ccpush": (f"{server.base}/v1/apps/{app_id}/call-records", server.process.pid),  # type: ignore[union-attr]
    }
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        shape: {kind: [] for kind in targets} for shape in ("single", "batch")
    }
    serial = itertools.count()
    for round_number in range(1, args.repeat + 1):
        for shape, batch, clients in (
            ("single", 1, SINGLE_CLIENTS),
            ("batch", BATCH, BATCH_CLIENTS),
        ):
            for kind, (target, pid) in targets.items():
                cpu = process_cpu(pid)
                prefix = b"r%02d-" % next(serial)
                run = await load(target, batch, clients, args.seconds, prefix, token)
                run["server_cpu_us_per_record"] = (
                    (process_cpu(pid) - cpu) / (run["records"] or 1) * 1e6
                )
                results[shape][kind].append(run)
                print(
                    f"run {round_number}/{args.repeat} {backend} {shape:<6} {kind:<10}"
                    f"{run['per_s']:>9,.0f} records/s"
                    f"  ({run['server_cpu_us_per_record']:.0f} us server CPU/record)",
                    flush=True,
                )
    return results


async def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def summarize(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for shape, kinds in results.items():
        medians = {
            kind: statistics.median(r["per_s"] for r in runs) for kind, runs in kinds.items()
        }
        cpu = {
            kind: statistics.median(r["server_cpu_us_per_record"] for r in runs)
            for kind, runs in kinds.items()
        }
        summary[shape] = {
            "records_per_s": medians,
            "server_cpu_us_per_record": cpu,
            "ratio": medians["ccpush"] / medians["reference"],
            "runs": {kind: [round(r["per_s"]) for r in runs] for kind, runs in kinds.items()},
        }
        print(
            f"  {shape:<6} ccpush {medians['ccpush']:>9,.0f} records/s ({cpu['ccpush']:.0f} us"
            f" CPU/record)   reference {medians['reference']:>9,.0f} records/s"
            f"   ratio {summary[shape]['ratio']:.2f}"
        )
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds, kinds alternated")
    parser.add_argument("--postgres", metavar="URL", help="also measure on PostgreSQL")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results here")
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    backends = {"sqlite": ""} | ({"postgres": args.postgres} if args.postgres else {})
    out: dict[str, Any] = {
        "settings": {
            "seconds": args.seconds,
            "repeat": args.repeat,
            "single_clients": SINGLE_CLIENTS,
            "batch_clients": BATCH_CLIENTS,
            "batch": BATCH,
        }
    }
    for backend, postgres in backends.items():
        results = await measure(args, backend, postgres)
        print(f"\nmedians of {args.repeat} runs, {backend}:")
        out[backend] = summarize(results)
    return with_load(out, load_before)


if __name__ == "__main__":
    run_benchmark(main, parse_args())
