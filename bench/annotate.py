"""Benchmark: annotators doing next + submit over HTTP against PostgreSQL, beside the floor.

What it does, in one run:

1. drops and recreates a scratch database (``concord_bench_annotate``), migrates it, and
   creates a running job of N items (redundancy 3), W workers with API tokens, and a pool
   that opens the job to them; Celery and the shared cache use scratch Redis databases
   (14 and 13), and one Celery worker runs beside the server, as in a deployment;
2. serves Concord with gunicorn (gthread workers, keep-alive) on a free loopback port with
   ``bench.annotate_settings``, which adds one trivial view: an indexed SELECT on the item
   queue and one INSERT (the floor for Django + PostgreSQL on this machine);
3. drives the floor with C concurrent simulated annotators (one keep-alive
   ``http.client`` connection per thread), two requests per label, and Concord the same
   way (``POST /assignments/next/`` then ``/submit/``), in turns: floor, Concord, floor,
   Concord... (``--rounds``, S seconds per loop in all), so that the shared machine's slow
   and fast spells fall on both;
4. prints labels/s and p50 / p95 latencies of each, the ratio floor / Concord, and checks
   the engine's invariants on the scratch database.

The last line is one JSON object with the headline figures.

    .venv/bin/python bench/annotate.py [--items 100000] [--clients 32] [--seconds 30] [--rounds 3]
        [--unprepared] [--polled-caches]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG = "postgres://postgres@127.0.0.1:5432"
DB = "concord_bench_annotate"
CLASSES = ["cat", "dog", "bird"]
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
CACHE_URL = os.environ.get("BENCH_CACHE_URL", "redis://127.0.0.1:6379/13")


# What the served processes are told beyond the production defaults, by flag:
# --unprepared: the hot path's statements go as plain SQL instead of session PREPAREs, as
# behind PgBouncer in transaction pooling mode (DATABASE_PREPARED_STATEMENTS=0);
# --polled-caches: the per-process caches check their versions in Redis on every request
# instead of hearing invalidations pushed (CONCORD_CACHE_PUSH=0; apps.common.caches).
SERVE_ENV = {"DATABASE_PREPARED_STATEMENTS": "1", "CONCORD_CACHE_PUSH": "1"}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(SERVE_ENV)
    env.update(
        DATABASE_URL=f"{PG}/{DB}",
        DJANGO_SETTINGS_MODULE="bench.annotate_settings",
        SECRET_KEY="bench-only-secret",
        DEBUG="0",  # DEBUG records every query; production speed needs it off
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="ERROR",
    )
    # Production-shaped: Celery on Redis (a worker consumes the re-aggregations that labels
    # trigger) and the shared cache on Redis, each on a scratch database of its own.
    env.update(REDIS_URL=REDIS_URL, CACHE_URL=CACHE_URL, CELERY_QUEUE="bench-annotate")
    return env


def recreate_database() -> None:
    import psycopg2
    import redis

    for url in (REDIS_URL, CACHE_URL):
        redis.Redis.from_url(url).flushdb()

    conn = psycopg2.connect(f"{PG}/postgres")
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        cursor.execute(f"CREATE DATABASE {DB}")
    conn.close()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=_env(), check=True
    )


def seed(
    n_items: int, n_workers: int, aggregation: str, reaggregate_every: int | None = None
) -> tuple[int, list[str]]:
    """Create the job, its items, the workers and their pool; return job id and tokens."""
    os.environ.update(_env())
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection

    from apps.accounts.models import Organization, VendorContract
    from apps.jobs.models import Item, Job
    from apps.workforce.models import Pool
    from apps.workforce.services import pool_job_open, worker_create

    client = Organization.objects.create(name="Bench Client", kind="client")
    vendor = Organization.objects.create(name="Bench Vendor", kind="vendor")
    VendorContract.objects.create(client=client, vendor=vendor)
    job = Job.objects.create(
        organization=client,
        name="bench",
        instructions="Pick the animal.",
        status=Job.Status.RUNNING,
        label_schema={"kind": "single_choice", "classes": CLASSES},
        policy={
            "min_labels": 3,
            "max_labels": 5,
            "gold_rate": 0.0,
            "lease_seconds": 600,
            "aggregation": aggregation,
            **({} if reaggregate_every is None else {"reaggregate_every": reaggregate_every}),
        },
    )
    rng = random.Random(1)
    batch: list[Item] = []
    for i in range(n_items):
        truth = rng.choice(CLASSES)
        batch.append(
            Item(
                job=job,
                external_id=f"b{i}",
                payload={"text": f"item {i}", "truth": truth},
                labels_needed=3,
            )
        )
        if len(batch) == 10000:
            Item.objects.bulk_create(batch)
            batch = []
    Item.objects.bulk_create(batch)
    pool = Pool.objects.create(organization=vendor, name="bench")
    tokens = []
    for i in range(n_workers):
        worker, token = worker_create(organization=vendor, username=f"bench{i}")
        pool.members.add(worker)
        tokens.append(token)
    pool_job_open(pool=pool, job=job)
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE bench_floor_log (id bigserial PRIMARY KEY, item_id bigint, value text)"
        )
        cursor.execute("VACUUM ANALYZE")
    connection.close()
    return job.pk, tokens


def celery_worker() -> subprocess.Popen:
    """One Celery worker, as a deployment runs beside gunicorn (it shares the 2 cores)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            "--concurrency",
            "1",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "WARNING",
            "-Q",
            "bench-annotate",
        ],
        cwd=ROOT,
        env=_env(),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(port: int, workers: int, threads: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "config.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "gthread",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--keep-alive",
            "30",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=_env(),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("gunicorn did not come up")


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.first: list[float] = []
        self.second: list[float] = []
        self.labels = 0
        self.idle = 0
        self.errors: list[str] = []

    def add(self, first: list[float], second: list[float], labels: int, idle: int) -> None:
        with self.lock:
            self.first += first
            self.second += second
            self.labels += labels
            self.idle += idle


def _post(
    conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict
) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    return response.status, data, (time.perf_counter() - started) * 1000


def concord_client(port: int, token: str, seconds: float, stats: Stats) -> None:
    rng = random.Random(token)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    first, second, labels, idle = [], [], 0, 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            status_, data, ms = _post(conn, "/api/v1/assignments/next/", b"{}", headers)
            first.append(ms)
            if status_ == 204:
                idle += 1
                time.sleep(0.05)
                continue
            if status_ != 200:
                stats.errors.append(f"next {status_}: {data[:200]!r}")
                return
            task = json.loads(data)
            # An honest-ish annotator: mostly the truth, sometimes not.
            truth = task["payload"].get("truth")
            label = truth if rng.random() < 0.8 else rng.choice(task["classes"])
            body = json.dumps({"label": label, "duration_ms": 1000}).encode()
            status_, data, ms = _post(
                conn, f"/api/v1/assignments/{task['id']}/submit/", body, headers
            )
            second.append(ms)
            if status_ != 200:
                stats.errors.append(f"submit {status_}: {data[:200]!r}")
                return
            labels += 1
    except Exception as exc:  # noqa: BLE001 - reported with the figures
        stats.errors.append(repr(exc))
    finally:
        conn.close()
        stats.add(first, second, labels, idle)


def cache_listeners(port: int, asks: int = 16) -> dict[int, dict]:
    """The cache listener figures /healthz reports, by the gunicorn worker that answered."""
    seen: dict[int, dict] = {}
    for _ in range(asks):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        body = json.loads(conn.getresponse().read())
        conn.close()
        figures = body.get("process", {}).get("cache_listener", {})
        seen[figures.get("pid", len(seen))] = figures
    return seen


def floor_client(port: int, job_id: int, seconds: float, stats: Stats) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    first, second, labels = [], [], 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for bucket in (first, second):
                status_, data, ms = _post(conn, f"/bench/floor/{job_id}/", b"{}", headers)
                if status_ != 200:
                    stats.errors.append(f"floor {status_}: {data[:200]!r}")
                    return
                bucket.append(ms)
            labels += 1
    except Exception as exc:  # noqa: BLE001
        stats.errors.append(repr(exc))
    finally:
        conn.close()
        stats.add(first, second, labels, 0)


def run(target, args_for, clients: int, seconds: float, stats: Stats | None = None) -> float:
    """Drive `clients` threads of `target` for `seconds`, adding to `stats`; the wall time."""
    stats = stats if stats is not None else Stats()
    threads = [
        threading.Thread(target=target, args=(*args_for(i), seconds, stats)) for i in range(clients)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


def _cpu_add(total: dict[str, float], delta: dict[str, float]) -> None:
    for key, value in delta.items():
        total[key] = total.get(key, 0.0) + value


CPU_SIDES = ("web", "celery", "postgres", "client")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def _children(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            found += _children(int(kid))
    return found


def cpu_snapshot(server: subprocess.Popen, worker: subprocess.Popen) -> dict[str, dict[int, float]]:
    """CPU seconds used so far by each process on each side of the benchmark (Linux /proc):
    the web server, the Celery worker, PostgreSQL's processes and this client. Gives the
    cost per label, which other load on a shared machine disturbs far less than throughput."""
    postgres: dict[int, float] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "comm").read_text().strip() == "postgres":
                postgres[int(proc.name)] = _cpu_seconds(int(proc.name))
        except OSError:
            continue
    return {
        "wal": _wal_counters(),
        "web": {p: _cpu_seconds(p) for p in _children(server.pid)},
        "celery": {p: _cpu_seconds(p) for p in _children(worker.pid)},
        "postgres": postgres,
        "client": {os.getpid(): _cpu_seconds(os.getpid())},
    }


def _wal_counters() -> dict[int, float]:
    """PostgreSQL's cluster-wide WAL counters (pg_stat_wal): records, full-page images,
    bytes. Every commit waits for its WAL to reach the disk, so WAL per label is a cost."""
    import psycopg2

    conn = psycopg2.connect(f"{PG}/postgres")
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal")
            records, fpi, size = cursor.fetchone()
    finally:
        conn.close()
    return {0: float(records), 1: float(fpi), 2: float(size)}


def _cpu_delta(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
) -> dict[str, float]:
    """Seconds per side between two snapshots (processes that exited in between are lost);
    for "wal", the three WAL counters' growth."""
    delta = {
        side: sum(max(0.0, t - before[side].get(pid, 0.0)) for pid, t in after[side].items())
        for side in after
        if side != "wal"
    }
    wal = {key: after["wal"][key] - before["wal"][key] for key in after["wal"]}
    delta.update(wal_records=wal[0], wal_fpi=wal[1], wal_bytes=wal[2])
    return delta


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0, help="Per loop, over all rounds.")
    parser.add_argument(
        "--rounds", type=int, default=3, help="Turns each loop takes (floor, Concord, floor...)."
    )
    parser.add_argument("--gunicorn-workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--aggregation",
        default="default",
        help='Job policy aggregation: "default" (the quality engine\'s posterior) or "mv".',
    )
    parser.add_argument(
        "--reaggregate-every",
        type=int,
        default=None,
        help="Job policy: full re-aggregation after this many labels (default: the policy's).",
    )
    parser.add_argument(
        "--unprepared",
        action="store_true",
        help="Serve with DATABASE_PREPARED_STATEMENTS=0 (plain SQL, as behind PgBouncer).",
    )
    parser.add_argument(
        "--polled-caches",
        action="store_true",
        help="Serve with CONCORD_CACHE_PUSH=0 (cache versions read from Redis per request).",
    )
    args = parser.parse_args()
    if args.unprepared:
        SERVE_ENV["DATABASE_PREPARED_STATEMENTS"] = "0"
    if args.polled_caches:
        SERVE_ENV["CONCORD_CACHE_PUSH"] = "0"

    print(
        f"cores: {os.cpu_count()}; items {args.items}, clients {args.clients}, "
        f"{args.seconds}s each in {args.rounds} turns, aggregation {args.aggregation}"
    )
    t0 = time.monotonic()
    recreate_database()
    job_id, tokens = seed(args.items, args.clients, args.aggregation, args.reaggregate_every)
    print(f"seeded in {time.monotonic() - t0:.1f}s")
    port = free_port()
    server = serve(port, args.gunicorn_workers, args.threads)
    worker = celery_worker()
    loops = {
        "floor": (floor_client, lambda i: (port, job_id)),
        "concord": (concord_client, lambda i: (port, tokens[i])),
    }
    stats = {name: Stats() for name in loops}
    elapsed = dict.fromkeys(loops, 0.0)
    cpu: dict[str, dict[str, float]] = {name: {} for name in loops}
    try:
        # A short warm-up of each loop first: connections, imports and caches.
        warm = max(3.0, args.seconds / 10)
        for target, args_for in loops.values():
            run(target, args_for, args.clients, warm)
        # Then the two loops take turns, so that a slower or faster spell of this shared
        # machine falls on both rather than on whichever ran at the time.
        for _ in range(args.rounds):
            for name, (target, args_for) in loops.items():
                before = cpu_snapshot(server, worker)
                elapsed[name] += run(
                    target, args_for, args.clients, args.seconds / args.rounds, stats[name]
                )
                _cpu_add(cpu[name], _cpu_delta(before, cpu_snapshot(server, worker)))
        listeners = cache_listeners(port)
    finally:
        server.terminate()
        worker.terminate()
        server.wait(timeout=30)
        worker.wait(timeout=30)

    floor, concord = stats["floor"], stats["concord"]
    floor_cpu, concord_cpu = cpu["floor"], cpu["concord"]
    floor_rate = floor.labels / elapsed["floor"]
    concord_rate = concord.labels / elapsed["concord"]
    print()
    print(f"{'':10} {'labels/s':>9} {'1st p50':>8} {'1st p95':>8} {'2nd p50':>8} {'2nd p95':>8}")
    for name, stats, rate in (("floor", floor, floor_rate), ("concord", concord, concord_rate)):
        print(
            f"{name:10} {rate:9.0f} {pct(stats.first, 50):8.1f} {pct(stats.first, 95):8.1f} "
            f"{pct(stats.second, 50):8.1f} {pct(stats.second, 95):8.1f}"
        )
    print("(concord: 1st = next, 2nd = submit; floor: two identical SELECT+INSERT requests; ms)")
    print()
    print("CPU ms per label (all cores; steadier than throughput on a shared machine):")
    print(f"{'':10} {'web':>7} {'celery':>7} {'postgres':>9} {'client':>7} {'total':>7}")
    for name, cpu, stats in (("floor", floor_cpu, floor), ("concord", concord_cpu, concord)):
        per = {k: cpu[k] * 1000 / max(stats.labels, 1) for k in CPU_SIDES}
        print(
            f"{name:10} {per['web']:7.2f} {per['celery']:7.2f} {per['postgres']:9.2f} "
            f"{per['client']:7.2f} {sum(per.values()):7.2f}"
        )
    print()
    print("WAL per label (each commit waits for its WAL to be flushed):")
    print(f"{'':10} {'records':>8} {'full pages':>11} {'bytes':>8}")
    for name, cpu, stats in (("floor", floor_cpu, floor), ("concord", concord_cpu, concord)):
        n = max(stats.labels, 1)
        print(
            f"{name:10} {cpu['wal_records'] / n:8.1f} {cpu['wal_fpi'] / n:11.2f} "
            f"{cpu['wal_bytes'] / n:8.0f}"
        )
    print(
        f"concord idle answers: {concord.idle}; errors: {len(floor.errors) + len(concord.errors)}"
    )
    for error in (floor.errors + concord.errors)[:5]:
        print("  ", error)

    from apps.assignments.selectors import invariant_violations

    problems = invariant_violations(job_id=job_id)
    print(f"invariants: {'ok' if not problems else problems[:5]}")
    subscribed = sum(bool(figures.get("subscribed")) for figures in listeners.values())
    print(f"cache listeners subscribed: {subscribed} of {len(listeners)} processes asked")
    print(
        json.dumps(
            {
                "labels_per_s": round(concord_rate, 1),
                "next_p95_ms": round(pct(concord.first, 95), 1),
                "submit_p95_ms": round(pct(concord.second, 95), 1),
                "floor_ratio": round(floor_rate / concord_rate, 2) if concord_rate else None,
                "prepared": not args.unprepared,
                "cache_invalidation": "polled" if args.polled_caches else "pushed",
            }
        )
    )


if __name__ == "__main__":
    main()
