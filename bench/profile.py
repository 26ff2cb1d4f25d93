"""Profile the running webhook's /mutate hot path with py-spy, under wrk load.

    .venv/bin/pip install py-spy        # not a project dependency
    .venv/bin/python bench/profile.py [--seconds 10] [--path /mutate] [--out DIR]

For each body (by default the 1-container pod and the ~200 KiB pod; `--body 50c`
for the 50-container pod; `--policy-count 100` for the scaling policy set) it starts
`webhook serve` (1 worker, shipped policies), drives it with wrk at concurrency 32
(see bench/run.py) and samples it with `py-spy record --format raw --function`
meanwhile. It prints, per body:

- where the time goes by area (TLS, HTTP server, JSON, pydantic, engine, metrics,
  logging, event loop), from each sample's innermost frame that belongs to an area;
- the functions with the most self time (the innermost frame of each sample);
- the project functions with the most inclusive time (the sample's stack contains them).

The raw stacks are kept under --out for flame graphs (e.g. speedscope or flamegraph.pl).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    # run as a script: import the package `bench` from the repository root (and leave the
    # standard library's `profile` module to itself)
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import corpus  # noqa: E402
from bench.load import CONCURRENCY  # noqa: E402
from bench.proc import free_port  # noqa: E402
from bench.servers import BIN, HERE, ROOT, Server, make_certs, webhook_argv  # noqa: E402

# (area, pattern on "function (file)"), first match wins, checked from the leaf upwards.
AREAS = [
    ("TLS (ssl, sslproto)", re.compile(r"\((.*/)?(ssl|sslproto)\.py")),
    ("JSON (orjson)", re.compile(r"orjson|\b(loads|dumps) \((.*/)?(review|server)\.py")),
    ("pydantic (model validation / dump)", re.compile(r"pydantic")),
    ("metrics (prometheus_client)", re.compile(r"prometheus_client|webhook/metrics\.py")),
    ("logging", re.compile(r"\((.*/)?logging/|webhook/logs\.py")),
    ("webhook engine (mutate/validate, patch, policy)", re.compile(r"webhook/(engine|policy|rules)/")),
    ("webhook review/decision/server", re.compile(r"webhook/(review|decision|server)\.py")),
    ("aiohttp (HTTP parsing, web handler)", re.compile(r"aiohttp")),
    ("asyncio event loop", re.compile(r"asyncio|selectors")),
]

# innermost Python frame of a waiting thread: the event loop's epoll, an idle executor thread
IDLE_FRAMES = ("(selectors.py)", "_worker (concurrent/futures/thread.py)")


def read_raw(path: Path) -> list[tuple[list[str], int]]:
    """py-spy --format raw: `frame;frame;...;leaf COUNT` per line, root first."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def frame_name(frame: str) -> str:
    """`func (path/to/file.py:12)` -> `func (file path from site-packages or the repo)`."""
    frame = re.sub(r":\d+\)$", ")", frame)
    frame = re.sub(r"\(.*/site-packages/", "(", frame)
    return frame.replace(f"({ROOT}/", "(")


def summarise(stacks: list[tuple[list[str], int]], top: int) -> str:
    areas: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    idle = 0
    for frames, count in stacks:
        names = [frame_name(f) for f in frames]
        python_frames = [n for n in names if ".py)" in n]
        if python_frames and any(w in python_frames[-1] for w in IDLE_FRAMES):
            idle += count   # with --native, py-spy keeps threads that wait; not work
            continue
        self_time[names[-1]] += count
        for name in set(names):
            if "(webhook/" in name:
                inclusive[name] += count
        for name in reversed(names):
            area = next((a for a, pattern in AREAS if pattern.search(name)), None)
            if area:
                areas[area] += count
                break
        else:
            areas["other"] += count
    total = sum(areas.values()) or 1
    pct = lambda c: f"{100 * c / total:5.1f}%"  # noqa: E731
    out = [f"{total} samples" + (f" (and {idle} of threads waiting, left out)" if idle else ""), "", "by area (innermost frame that belongs to one):"]
    out += [f"  {pct(c)}  {a}" for a, c in areas.most_common()]
    out += ["", f"top {top} by self time:"]
    out += [f"  {pct(c)}  {n}" for n, c in self_time.most_common(top)]
    out += ["", f"top {top} webhook functions by inclusive time:"]
    out += [f"  {pct(c)}  {n}" for n, c in inclusive.most_common(top)]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description="py-spy profile of /mutate under wrk load (see module doc)")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--path", default="/mutate")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--body", nargs="+", choices=("1c", "50c", "200k", "mix"), default=["1c", "200k"],
                        help="pods to profile with: 1 container, 50 containers, ~200 KiB (default 1c 200k)")
    parser.add_argument("--policy-count", type=int, default=0,
                        help="use N InjectionPolicies as in bench/run.py's scaling runs (default: the "
                             "shipped policies)")
    parser.add_argument("--native", action="store_true",
                        help="also sample C frames (orjson, pydantic-core, OpenSSL); pauses the server "
                             "for each sample, so it slows more")
    parser.add_argument("--out", type=Path, default=None, help="keep the raw stacks here")
    parser.add_argument("--memo-off", action="store_true",
                        help="serve with --decision-memo 0: every request evaluated")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    wrk = shutil.which("wrk")
    if not py_spy or not wrk:
        parser.error("needs py-spy (.venv/bin/pip install py-spy) and wrk (apt-get install wrk)")

    tmp = Path(tempfile.mkdtemp(prefix="webhook-profile-"))
    out_dir = args.out or tmp
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        certs = make_certs(tmp / "certs")
        available = {
            "1c": ("1-container pod", lambda: [corpus.body(corpus.synthetic_pod(1))]),
            "50c": ("50-container pod", lambda: [corpus.body(corpus.synthetic_pod(50))]),
            "200k": ("200 KiB pod", lambda: [corpus.body(corpus.large_pod())]),
            "mix": ("corpus mix", lambda: [b for _, b in corpus.mixed_bodies()]),
        }
        bodies = {available[b][0]: available[b][1]() for b in args.body}
        policies = ROOT / "policies"
        if args.policy_count:
            policies = corpus.scaling_policy_dir(args.policy_count, tmp / "policies")
        for label, body in bodies.items():
            slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
            bodies_file = corpus.write_bodies(tmp / f"{slug}.txt", body)
            port = free_port()
            server = Server(f"webhook-{slug}", webhook_argv(port, certs, policies, memo=not args.memo_off), port,
                            certs / "ca.crt", tmp)
            try:
                server.wait_ready()
                url = server.url(f"{args.path}?timeout=10s")
                load = subprocess.Popen([wrk, "-t1", f"-c{CONCURRENCY}", f"-d{args.seconds + 3}s", "--timeout",
                                         "10s", "-s", str(HERE / "bodies.lua"), url, "--", str(bodies_file)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
                time.sleep(1.5)   # connections up, server warm
                raw = out_dir / f"{slug}.raw.txt"
                subprocess.run([py_spy, "record", "--pid", str(server.pid), "--format", "raw", "--function",
                                "--rate", str(args.rate), "--duration", str(args.seconds),
                                *(["--native"] if args.native else ["--nonblocking"]), "--output", str(raw)], check=True, capture_output=True)
                wrk_out, _ = load.communicate(timeout=args.seconds + 60)
                rps = re.search(r"Requests/sec:\s+([\d.]+)", wrk_out)
                which = f"{args.policy_count} InjectionPolicies" if args.policy_count else "shipped policies"
                size = f"{len(body[0]):,} B" if len(body) == 1 else f"{len(body)} bodies"
                print(f"== {args.path}, {label} ({size}), {which}, concurrency {CONCURRENCY}, "
                      f"{rps.group(1) if rps else '?'} req/s while sampled (py-spy slows it a little) ==")
                print(summarise(read_raw(raw), args.top))
                print()
            finally:
                server.stop()
        if args.out:
            print(f"raw stacks in {out_dir}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
