"""The benchmark (bench/): a short run of the whole pipeline against real servers, and
the pieces it rests on. No assertion on timings: the machine is shared and noisy; the
figures are checked for being figures (positive, finite, consistent), the report for
having every section and every target."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench import corpus, pyload, settings, targets
from bench.load import LoadGenerator, Run, Series
from bench.proc import free_port
from bench.report import SECTIONS, Report
from bench.servers import Fleet, Pinning, baseline_argv, make_certs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """One `bench/run.py --quick` as `make bench` runs it (the script, from the repository
    root): its stdout and its JSON."""
    out = tmp_path_factory.mktemp("bench") / "figures.json"
    done = subprocess.run([sys.executable, "bench/run.py", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_quick_run_prints_every_section(quick_run: tuple[str, dict[str, Any]]) -> None:
    stdout, _ = quick_run
    for title in SECTIONS:
        assert f"\n{title}" in f"\n{stdout}", title
    assert "WARNING" not in stdout


def _series(figures: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {f"main {k}": v for k, v in figures["main"].items()}
    out.update({f"containers {k}": v for k, v in figures["containers"].items()})
    out.update({f"policies {k}": v for k, v in figures["policies"].items()})
    out.update({f"workers {k}": v for k, v in figures["multi_workers"]["series"].items()})
    return out


def test_quick_run_figures_are_sane(quick_run: tuple[str, dict[str, Any]]) -> None:
    _, figures = quick_run
    series = _series(figures)
    # every figure of the main comparison, pod size, policy count and several workers
    assert len(series) == 8 + 15 + 7 + 4
    for label, s in series.items():
        assert s["errors"] == 0, label
        assert s["rps"] > 0 and math.isfinite(s["rps"]), label
        assert 0 < s["p50_ms"] <= s["p99_ms"], label
        assert s["server_cpu_pct"] > 0, label
    for name, ratio in figures["ratios"].items():
        assert 0 < ratio < 100, name
    memory = figures["memory"]
    assert set(memory) == {"baseline", "webhook", "webhook-off", "webhook-new"}
    for name, m in memory.items():
        assert 10 < m["rss_mib"] <= m["peak_mib"] < 1024, name
    assert 0 < figures["ready_s"]["webhook"]["median"] < 30
    cpu = figures["cpu_per_review_ms"]
    assert cpu["bytes/200KiB"] >= 200 * 1024
    assert all(v > 0 for v in cpu.values())
    assert figures["soak"]["requests"] >= 300 and figures["soak"]["errors"] == 0
    # the preflight: the never-seen mix is decided as the repeat mix, some pods patched, some denied
    answers = figures["preflight"]
    assert answers["webhook"] == answers["webhook-never-seen"]
    assert answers["webhook"]["patched"] > 0 and answers["webhook"]["denied"] > 0


def test_quick_run_measures_repeats_and_never_seen_pods(quick_run: tuple[str, dict[str, Any]]) -> None:
    """The repeat mix is answered from the memo, the never-seen mix never is: the memo's
    own counters over the measured runs say so."""
    _, figures = quick_run
    for path in ("/mutate", "/validate"):
        repeat, new = figures["main"][f"webhook {path}"]["memo"], figures["main"][f"webhook-new {path}"]["memo"]
        assert repeat.get("hit", 0) > 0.9 * sum(repeat.values()), (path, repeat)
        assert new.get("hit", 0) == 0 and new.get("miss", 0) > 0, (path, new)
        assert figures["main"][f"webhook-off {path}"]["memo"].get("hit", 0) == 0
        for mix in ("repeat", "never-seen", "repeat, memo off"):
            assert figures["mixes"][mix][path]["ratio"] > 0
    rows = {t["target"]: t for t in figures["targets_issue21"]}
    assert set(rows) == {"rollout repeats /mutate", "rollout repeats /validate"}


def test_quick_run_judges_every_issue_7_target(quick_run: tuple[str, dict[str, Any]]) -> None:
    stdout, figures = quick_run
    rows = figures["targets"]
    assert len(rows) == 22
    assert all(r["result"] in ("PASS", "MISS") for r in rows)
    passed = sum(r["result"] == "PASS" for r in rows)
    assert f"{passed} of 22 targets met" in stdout


def _series_of(label: str, rps: float, p99_ms: float, memo: dict[str, float]) -> Series:
    run = Run(rps=rps, p50_ms=p99_ms / 2, p99_ms=p99_ms, requests=int(rps), errors=0, loadgen_cpu=20,
              server_cpu=99)
    return Series(label, [run], dict(memo))


def test_compare_judges_never_seen_pods_against_an_earlier_run(capsys: pytest.CaptureFixture[str]) -> None:
    """With --compare, the never-seen mix's ratio to this run's baseline is set against the
    same ratio of the earlier run: no slower passes, slower misses; repeats are judged
    in this run alone."""
    series = {}
    for path, new_rps in (("/mutate", 1_100.0), ("/validate", 900.0)):
        series[f"baseline {path}"] = _series_of("b", 4_000, 20, {})
        series[f"webhook {path}"] = _series_of("w", 3_600, 22, {"hit": 99, "miss": 1})
        series[f"webhook-new {path}"] = _series_of("n", new_rps, 60, {"miss": 100})
        series[f"webhook-off {path}"] = _series_of("o", 1_000, 50, {"skip": 100})
    earlier = {"mixes": {"never-seen": {"/mutate": {"ratio": 0.25}, "/validate": {"ratio": 0.25}}}}
    report = Report(settings.parse(["--quick"]))
    report.mixes(series, earlier)
    assert report.verdicts_21 == [
        ("rollout repeats /mutate", "0.90x", ">= 0.8x", "PASS"),
        ("rollout repeats /validate", "0.90x", ">= 0.8x", "PASS"),
        ("never-seen pods /mutate, this run / earlier", "1.10x", ">= 1x", "PASS"),
        ("never-seen pods /validate, this run / earlier", "0.90x", ">= 1x", "MISS"),
    ]
    printed = capsys.readouterr().out
    assert "== Rollout repeats and pods never seen before" in printed
    assert "99%" in printed and "0.28x" in printed    # memo hits; the never-seen /mutate ratio 1,100 / 4,000
    assert report.results["mixes"]["never-seen"]["/validate"]["memo_hit_share"] == 0.0


@pytest.mark.process
def test_compare_refuses_a_missing_file(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "bench/run.py", "--quick", "--compare", str(tmp_path / "none.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--compare: no such file" in done.stderr


@pytest.mark.process
def test_pinned_servers_and_load_generator_run_on_their_cpus(tmp_path: Path) -> None:
    """--server-cpus and --loadgen-cpus: the server runs under taskset on its CPU (the pid
    the benchmark reads /proc by is the server's own), and a pinned load generator's run
    is measured as an unpinned one is."""
    pinning = Pinning(server="0", loadgen=str(max(os.sched_getaffinity(0))))
    fleet = Fleet(make_certs(tmp_path / "certs"), tmp_path, pinning)
    bodies = corpus.write_bodies(tmp_path / "pod.txt", [corpus.body(corpus.synthetic_pod(1))])
    try:
        port = free_port()
        server = fleet.start("baseline", baseline_argv(port, fleet.certs), port)
        assert os.sched_getaffinity(server.pid) == {0}
        assert "baseline_server.py" in Path(f"/proc/{server.pid}/cmdline").read_text()
        load = LoadGenerator("python", threads=1, processes=1, pinning=pinning)
        # Long enough for a loaded machine to start the generator and answer some requests.
        run = load.run(server.url("/mutate"), bodies, 2.0, server_pid=server.pid)
        assert run.requests > 0 and run.errors == 0 and run.server_cpu > 0
    finally:
        fleet.stop_all()


@pytest.mark.parametrize("limit, value, expected", [
    (targets.THROUGHPUT, 0.75, "PASS"),          # a limit is met at the limit
    (targets.THROUGHPUT, 0.749, "MISS"),
    (targets.P99, 1.5, "PASS"),
    (targets.P99, 1.51, "MISS"),
    (targets.RSS_GROWTH, 4.99, "PASS"),
    (targets.RSS_GROWTH, 5.0, "MISS"),           # "less than 5 %"
    (targets.REPEATS, 0.8, "PASS"),
    (targets.REPEATS, 0.79, "MISS"),
    (targets.READY_S, math.nan, "n/a"),
])
def test_targets_judge_at_their_limits(limit: targets.Limit, value: float, expected: str) -> None:
    assert limit.verdict(value) == expected


def test_targets_print_as_the_report_always_has() -> None:
    assert [t.text for t in (targets.THROUGHPUT, targets.P99, targets.RSS_MIB, targets.RSS_GROWTH,
                             targets.CPU_MS_200K, targets.READY_S)] == \
        [">= 0.75x", "<= 1.5x", "<= 64 MiB", "< 5%", "<= 2 ms", "<= 1.5 s"]


def test_docs_targets_table_is_generated_from_bench_targets() -> None:
    """docs/performance.md quotes the targets only through this generated table:
    regenerate with `python -m bench.targets` after a change to bench/targets.py."""
    text = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    begin, end = "<!-- targets: begin (python -m bench.targets) -->\n", "<!-- targets: end -->"
    assert begin in text and end in text
    assert text.split(begin, 1)[1].split(end, 1)[0].strip() == targets.markdown()


def _request_line(pieces: tuple[bytes, ...], number: int) -> dict[str, Any]:
    raw = pyload._numbered(pieces, number)
    return orjson.loads(raw.split(b"\r\n\r\n", 1)[1])


def test_load_generator_gives_every_request_its_own_uid_and_never_seen_pod(tmp_path: Path) -> None:
    """pyload.py (as bodies.lua) puts a request's number wherever the uid's token is:
    the uid in the repeat mix; the uid and the pod's label in the never-seen mix."""
    repeat, new = corpus.mixed_bodies()[0][1], corpus.mixed_bodies(never_seen=True)[0][1]
    bodies = corpus.write_bodies(tmp_path / "bodies.txt", [repeat, new])
    (repeat_request, new_request) = pyload._requests("https://127.0.0.1:1/mutate", bodies, [])
    assert len(repeat_request) == 2 and len(new_request) == 3    # cut once, twice
    label = corpus.NEVER_SEEN_LABEL
    first, second = _request_line(new_request, 7), _request_line(new_request, 8)
    assert first["request"]["uid"] == first["request"]["object"]["metadata"]["labels"][label] \
        == "6b1a0a3e-bench-4000-8000-000000000007"
    assert second["request"]["object"]["metadata"]["labels"][label].endswith("000000000008")
    one, other = _request_line(repeat_request, 1), _request_line(repeat_request, 2)
    assert one["request"]["uid"] != other["request"]["uid"]
    assert one["request"]["object"] == other["request"]["object"]
    assert label not in (one["request"]["object"]["metadata"].get("labels") or {})


def test_never_seen_mix_is_the_repeat_mix_with_one_label() -> None:
    repeat, new = corpus.mixed_bodies(), corpus.mixed_bodies(never_seen=True)
    assert [n for n, _ in repeat] == [n for n, _ in new]
    for (_, r), (_, n) in zip(repeat, new):
        old_pod, new_pod = orjson.loads(r)["request"]["object"], orjson.loads(n)["request"]["object"]
        labels = new_pod["metadata"].pop("labels")
        assert labels.pop(corpus.NEVER_SEEN_LABEL) == orjson.loads(n)["request"]["uid"]
        if labels:
            new_pod["metadata"]["labels"] = labels
        assert new_pod == old_pod
