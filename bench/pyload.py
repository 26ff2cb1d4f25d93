"""Fallback load generator, used only when wrk is not installed.

Same contract as `wrk -s bench/bodies.lua`: keep-alive HTTPS connections at a fixed
concurrency, each POSTing the bodies of a file (one per line) in turn, for a
duration or until a number of responses; prints one `BENCH_RESULT {json}` line with
the same fields. The work is spread over several processes (a raw asyncio HTTP/1.1
client in each, no HTTP library) so that it is as light as Python allows, but it is
still far heavier per request than wrk: on a small machine it competes with the
server for CPU, and bench/run.py says so in its output when it is used. As with
wrk, no two requests carry the same request uid (see `_numbered`).

    python bench/pyload.py --url https://127.0.0.1:PORT/mutate --bodies FILE \
        --connections 32 --duration 5 [--processes 2] [--stop-after N] [--paths /mutate,/validate]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import ssl
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit


# bench/corpus.py writes request uids as this token and 12 digits (UID_TOKEN); each
# request gets its own digits wherever the token appears, as no API server sends a uid
# twice (bench/bodies.lua). The never-seen mix carries the token in a label too.
UID_TOKEN = b"6b1a0a3e-bench-4000-8000-"
UID_DIGITS = 12


def _cut(whole: bytes) -> tuple[bytes, ...]:
    """`whole` cut around the digits after each occurrence of UID_TOKEN: the pieces to
    join with a request's number (one piece when the token is absent)."""
    pieces: list[bytes] = []
    piece_start = search = 0
    while (at := whole.find(UID_TOKEN, search)) >= 0:
        digits = search = at + len(UID_TOKEN)
        if whole[digits:digits + UID_DIGITS].isdigit():
            pieces.append(whole[piece_start:digits])
            piece_start = search = digits + UID_DIGITS
    pieces.append(whole[piece_start:])
    return tuple(pieces)


def _requests(url: str, bodies_file: Path, paths: list[str]) -> list[tuple[bytes, ...]]:
    """Each request, head and body, cut around its uid digits (`_cut`)."""
    parts = urlsplit(url)
    targets = paths or [parts.path + (f"?{parts.query}" if parts.query else "")]
    out: list[tuple[bytes, ...]] = []
    for line in bodies_file.read_bytes().splitlines():
        for target in targets if line else ():
            head = (f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(line)}\r\n\r\n")
            out.append(_cut(head.encode("ascii") + line))
    return out


def _numbered(request: tuple[bytes, ...], number: int) -> bytes:
    return request[0] if len(request) == 1 else (b"%012d" % number).join(request)


async def _connection(host: str, port: int, context: ssl.SSLContext,
                      requests: list[tuple[bytes, ...]], offset: int, deadline: float,
                      budget: list[int], numbers: Iterator[int], out: dict) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
    except OSError:
        out["errors_connect"] += 1
        return
    i = offset
    latencies = out["latencies"]
    try:
        while time.perf_counter() < deadline and budget[0] != 0:
            budget[0] -= 1
            data = _numbered(requests[i % len(requests)], next(numbers))
            i += 1
            started = time.perf_counter()
            writer.write(data)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            out["bytes"] += len(head) + len(body)
            if status >= 400:
                out["errors_status"] += 1
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        out["errors_read"] += 1
    finally:
        writer.close()


def _worker(args: tuple) -> dict:
    url, bodies_file, connections, start_at, duration, stop_after, index, paths = args
    parts = urlsplit(url)
    requests = _requests(url, Path(bodies_file), paths)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    out = {"latencies": [], "bytes": 0, "errors_connect": 0, "errors_read": 0, "errors_status": 0}
    budget = [stop_after if stop_after > 0 else -1]
    # each process numbers from its own range, each run from a point set by the clock
    numbers = itertools.count((index % 10) * 10**11 + int(time.time()) % 100000 * 10**6)

    async def run() -> None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        began = time.perf_counter()
        deadline = began + duration
        await asyncio.gather(*(_connection(parts.hostname, parts.port or 443, context, requests,
                                           index * 7 + c * 3, deadline, budget, numbers, out)
                               for c in range(connections)))
        out["elapsed"] = time.perf_counter() - began

    asyncio.run(run())
    return out


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def main() -> None:
    parser = argparse.ArgumentParser(description="fallback HTTPS load generator (see module doc)")
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", type=Path, required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--stop-after", type=int, default=0, help="total responses, 0: no limit")
    parser.add_argument("--paths", default="", help="comma-separated paths to send each body to in turn")
    args = parser.parse_args()
    procs = max(1, min(args.processes, args.connections))
    share = [args.connections // procs + (1 if i < args.connections % procs else 0) for i in range(procs)]
    stop = [args.stop_after // procs + (1 if i < args.stop_after % procs else 0) if args.stop_after else 0
            for i in range(procs)]
    duration = args.duration if not args.stop_after else max(args.duration, 3600.0)
    paths = [p for p in args.paths.split(",") if p]
    if procs == 1:   # no pool to start: the run begins at once
        results = [_worker((args.url, str(args.bodies), share[0], time.time(), duration, stop[0], 0, paths))]
    else:
        start_at = time.time() + 0.5   # every process started and ready
        with multiprocessing.get_context("spawn").Pool(procs) as pool:
            results = pool.map(_worker, [(args.url, str(args.bodies), share[i], start_at, duration, stop[i], i,
                                          paths) for i in range(procs)])
    latencies = sorted(x for r in results for x in r["latencies"])
    elapsed = max(r.get("elapsed", 0.0) for r in results) or 1e-9
    us = 1e6
    print("BENCH_RESULT " + json.dumps({
        "requests": len(latencies), "duration_us": int(elapsed * us),
        "bytes": sum(r["bytes"] for r in results),
        "errors_connect": sum(r["errors_connect"] for r in results),
        "errors_read": sum(r["errors_read"] for r in results), "errors_write": 0,
        "errors_status": sum(r["errors_status"] for r in results), "errors_timeout": 0,
        "p50_us": int(percentile(latencies, 50) * us), "p90_us": int(percentile(latencies, 90) * us),
        "p99_us": int(percentile(latencies, 99) * us),
        "max_us": int((latencies[-1] if latencies else 0) * us),
        "mean_us": (statistics.fmean(latencies) * us) if latencies else 0.0,
    }), flush=True)


if __name__ == "__main__":
    main()
