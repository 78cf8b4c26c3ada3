"""Soak: 64 annotators and a client at once, with kill -9 of workers midway, then the books.

What it does, in one run:

1. drops and recreates a scratch database (``concord_soak_ops``), migrates it, and creates a
   running job, a client with an API token, and W annotators (workers with API tokens) in a
   pool open to the job; Celery uses Redis database 8 and the shared cache database 9;
2. serves Concord with gunicorn (gthread workers) and runs two Celery workers (prefork, one
   child each) beside it, as deployed (``config.settings``, DEBUG off);
3. drives it for S seconds: W annotator threads doing ``next`` + ``submit`` over keep-alive
   connections, and one client thread uploading a batch of new items every few seconds and
   reading the results (JSON lines) and metrics in between;
4. at half time kills one Celery worker (the parent and its child) and one gunicorn worker
   with SIGKILL; gunicorn's master replaces its worker, the Celery worker is started again
   after 5 s as a supervisor would (a task it held is taken back after the visibility timeout,
   30 s here); annotators whose connection was cut reconnect and send the request again
   (a submit is idempotent, so a label is acknowledged once whether or not the first try
   reached the server);
5. stops the load, lets Celery drain, and checks the database: every acknowledged label
   stored once with its value, no item over budget, no lease stuck, no settled item without
   a label, every result equal to a fresh aggregation (``manage.py checkinvariants``), no 500
   answered and none in the server's log, the deadlocks PostgreSQL counted.

The last line is one JSON object:
``{"seconds", "labels_per_s", "errors", "lost_labels", "invariant_violations",
"empty_results", "deadlocks", ...}``.

    .venv/bin/python bench/soak.py [--seconds 300] [--annotators 64] [--items 3000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG = "postgres://postgres@127.0.0.1:5432"
DB = "concord_soak_ops"
REDIS_URL = "redis://127.0.0.1:6379/8"
CACHE_URL = "redis://127.0.0.1:6379/9"
QUEUE = "soak-ops"
CLASSES = ["cat", "dog", "bird"]
# Set by --pgbouncer: the port of the PgBouncer (transaction pooling) the servers go through.
POOLER_PORT: int | None = None
# Set by --no-prepared: the servers send the hot path's statements unprepared.
UNPREPARED = False


def _env(*, pooled: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"{PG}/{DB}",
        DJANGO_SETTINGS_MODULE="config.settings",
        SECRET_KEY="soak-only-secret",
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="ERROR",
        REDIS_URL=REDIS_URL,
        CACHE_URL=CACHE_URL,
        CELERY_QUEUE=QUEUE,
        CELERY_VISIBILITY_TIMEOUT="30",
        # The simulated annotators are robots: on a keep-alive connection a gunicorn thread
        # serves without a queue, a few reach 13 labels/s and the per-token submit limit
        # (600/min) answers them 429 (about 10% of submits in 5-minute runs). The soak
        # measures the books under load; the limits have their own tests.
        THROTTLE_SUBMIT_RATE="100000/min",
        THROTTLE_LIST_RATE="100000/min",
    )
    if pooled and UNPREPARED:
        env["DATABASE_PREPARED_STATEMENTS"] = "0"
    if pooled and POOLER_PORT is not None:
        env.update(
            DATABASE_URL=f"postgres://postgres@127.0.0.1:{POOLER_PORT}/{DB}",
            DATABASE_POOLER="transaction",
        )
    return env


def pgbouncer(port: int, logs: Path) -> subprocess.Popen:
    """Debian's PgBouncer in transaction pooling mode in front of the scratch database."""
    config = logs / "pgbouncer.ini"
    config.write_text(
        f"[databases]\n{DB} = host=127.0.0.1 port=5432 dbname={DB} user=postgres\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "auth_type = any\npool_mode = transaction\nmax_client_conn = 1000\n"
        "default_pool_size = 20\nignore_startup_parameters = extra_float_digits,options\n"
    )
    config.chmod(0o644)
    logs.chmod(0o755)
    command = ["pgbouncer", str(config)]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "postgres"]  # PgBouncer refuses to run as root
    process = subprocess.Popen(
        command, stdout=(logs / "pgbouncer.log").open("ab"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("pgbouncer did not come up")


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


def seed(n_items: int, n_annotators: int) -> tuple[int, str, list[str]]:
    """The job with its first items, the client's token and the annotators' tokens."""
    os.environ.update(_env())
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection

    from apps.accounts.models import Organization, VendorContract
    from apps.accounts.services import membership_ensure, token_create
    from apps.jobs.models import Item, Job
    from apps.workforce.models import Pool
    from apps.workforce.services import pool_job_open, worker_create

    membership = membership_ensure(
        username="soak-client", org_name="Soak Client", org_kind="client", role="client"
    )
    client_token = token_create(user=membership.user)
    vendor = Organization.objects.create(name="Soak Vendor", kind="vendor")
    VendorContract.objects.create(client=membership.organization, vendor=vendor)
    job = Job.objects.create(
        organization=membership.organization,
        name="soak",
        status=Job.Status.RUNNING,
        label_schema={"kind": "single_choice", "classes": CLASSES},
        policy={"min_labels": 3, "max_labels": 5, "gold_rate": 0.0, "lease_seconds": 120},
    )
    Item.objects.bulk_create(
        Item(job=job, external_id=f"s{i}", payload={"text": f"item {i}"}, labels_needed=3)
        for i in range(n_items)
    )
    pool = Pool.objects.create(organization=vendor, name="soak")
    tokens = []
    for i in range(n_annotators):
        worker, token = worker_create(organization=vendor, username=f"soak{i}")
        pool.members.add(worker)
        tokens.append(token)
    pool_job_open(pool=pool, job=job)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    connection.close()
    return job.pk, client_token, tokens


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(port: int, log: Path) -> subprocess.Popen:
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi"]
        + ["--bind", f"127.0.0.1:{port}", "--worker-class", "gthread", "--workers", "2"]
        + ["--threads", "8", "--keep-alive", "30", "--log-level", "warning"],
        cwd=ROOT,
        env=_env(pooled=True),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
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


def celery_worker(name: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-n", f"{name}@%h"]
        + ["--concurrency", "1", "--without-gossip", "--without-mingle"]
        + ["--loglevel", "WARNING", "-Q", QUEUE],
        cwd=ROOT,
        env=_env(pooled=True),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def kill9(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Books:
    """What the clients saw: latencies, answers by status, acknowledged labels."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next_ms: list[float] = []
        self.submit_ms: list[float] = []
        self.acknowledged: dict[int, str] = {}  # assignment id -> label
        self.statuses: dict[str, int] = {}
        self.reconnects = 0
        self.errors: list[str] = []
        self.uploaded = 0
        self.reads = 0

    def status(self, what: str, code: int) -> None:
        with self.lock:
            key = f"{what} {code}"
            self.statuses[key] = self.statuses.get(key, 0) + 1
            if code >= 500 and code != 503:
                self.errors.append(key)


class Connection:
    """A keep-alive connection that reconnects and sends again when the server drops it."""

    def __init__(self, port: int, token: str, books: Books) -> None:
        self.port, self.books = port, books
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        for attempt in range(20):
            started = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers=headers or self.headers)
                response = self.conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                # A killed gunicorn worker took the connection (and maybe the request) with it.
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                with self.books.lock:
                    self.books.reconnects += 1
                time.sleep(0.05 * (attempt + 1))
                continue
            if response.status == 503:  # retry later, as the API asks
                time.sleep(float(response.getheader("Retry-After") or 1))
                continue
            return response.status, data, (time.perf_counter() - started) * 1000
        raise RuntimeError(f"{method} {path}: no answer after 20 tries")


def annotator(port: int, token: str, stop: threading.Event, books: Books) -> None:
    rng = random.Random(token)
    conn = Connection(port, token, books)
    next_ms, submit_ms = [], []
    try:
        while not stop.is_set():
            code, data, ms = conn.request("POST", "/api/v1/assignments/next/", b"{}")
            books.status("next", code)
            if code == 204:
                time.sleep(0.2)
                continue
            if code != 200:
                time.sleep(0.2)
                continue
            next_ms.append(ms)
            task = json.loads(data)
            label = rng.choice(task["classes"])
            body = json.dumps({"label": label}).encode()
            code, data, ms = conn.request("POST", f"/api/v1/assignments/{task['id']}/submit/", body)
            books.status("submit", code)
            if code == 200:
                submit_ms.append(ms)
                with books.lock:
                    books.acknowledged[task["id"]] = label
    except Exception as exc:  # noqa: BLE001 - reported in the books
        with books.lock:
            books.errors.append(f"annotator: {exc!r}")
    with books.lock:
        books.next_ms += next_ms
        books.submit_ms += submit_ms


def client(port: int, token: str, job_id: int, stop: threading.Event, books: Books) -> None:
    conn = Connection(port, token, books)
    batch = 0
    try:
        while not stop.is_set():
            rows = b"".join(
                json.dumps({"external_id": f"u{batch}-{i}", "payload": {"n": i}}).encode() + b"\n"
                for i in range(300)
            )
            code, _, _ = conn.request(
                "POST",
                f"/api/v1/jobs/{job_id}/items/",
                rows,
                {**conn.headers, "Content-Type": "application/x-ndjson"},
            )
            books.status("upload", code)
            if code in (200, 201):
                books.uploaded += 300
            batch += 1
            for path in (
                f"/api/v1/jobs/{job_id}/results/?format=jsonl&status=settled",
                f"/api/v1/jobs/{job_id}/metrics/",
                f"/api/v1/jobs/{job_id}/",
            ):
                if stop.wait(1.0):
                    break
                code, _, _ = conn.request("GET", path)
                books.status("read", code)
                books.reads += 1
    except Exception as exc:  # noqa: BLE001
        with books.lock:
            books.errors.append(f"client: {exc!r}")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def check(job_id: int, books: Books, deadlocks_before: int) -> dict:
    from django.core.management import call_command
    from django.db import connection

    from apps.assignments.models import Label
    from apps.jobs.models import Item

    stored = dict(
        Label.objects.filter(assignment_id__in=list(books.acknowledged)).values_list(
            "assignment_id", "value"
        )
    )
    lost = sum(1 for a, v in books.acknowledged.items() if stored.get(a) != v)
    empty = Item.objects.filter(state=Item.State.SETTLED, label__isnull=True).count()
    empty += Item.objects.filter(state=Item.State.SETTLED, label="").count()
    out, err = _Capture(), _Capture()
    try:
        call_command("checkinvariants", stdout=out, stderr=err)
        violations = 0
    except Exception as exc:  # noqa: BLE001 - CommandError: the count is in its message
        lines = [line for line in out.text.splitlines() if line.strip()]
        violations = len(lines) or 1
        print("checkinvariants:", exc)
        for line in lines[:20]:
            print("  ", line)
    with connection.cursor() as cursor:
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = %s", [DB])
        deadlocks = int(cursor.fetchone()[0]) - deadlocks_before
    return {"lost": lost, "empty": empty, "violations": violations, "deadlocks": deadlocks}


class _NoKill(Exception):
    """The control run: no kill at half time."""


class _Capture:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--annotators", type=int, default=64)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="web and Celery go through PgBouncer in transaction pooling mode",
    )
    parser.add_argument(
        "--no-prepared",
        action="store_true",
        help="DATABASE_PREPARED_STATEMENTS=0 without a pooler (what a pooler costs the hot path)",
    )
    parser.add_argument(
        "--no-kill", action="store_true", help="no kill -9 at half time (a control run)"
    )
    args = parser.parse_args()

    started = time.monotonic()
    recreate_database()
    job_id, client_token, tokens = seed(args.items, args.annotators)
    logs = Path(tempfile.mkdtemp(prefix="concord-soak-"))
    pooler = None
    global UNPREPARED
    UNPREPARED = args.no_prepared
    if args.pgbouncer:
        global POOLER_PORT
        POOLER_PORT = free_port()
        pooler = pgbouncer(POOLER_PORT, logs)
    port = free_port()
    server = serve(port, logs / "gunicorn.log")
    workers = {name: celery_worker(name, logs / f"{name}.log") for name in ("soak1", "soak2")}
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = %s", [DB])
        deadlocks_before = int(cursor.fetchone()[0])
    connection.close()

    books = Books()
    stop = threading.Event()
    threads = [
        threading.Thread(target=annotator, args=(port, token, stop, books)) for token in tokens
    ]
    threads.append(threading.Thread(target=client, args=(port, client_token, job_id, stop, books)))
    load_started = time.monotonic()
    for thread in threads:
        thread.start()
    killed: list[str] = []
    try:
        time.sleep(args.seconds / 2)
        if args.no_kill:
            raise _NoKill
        victim = workers["soak1"]
        kill9([*children(victim.pid), victim.pid])
        victim.wait(timeout=10)
        gunicorn_workers = children(server.pid)
        kill9(gunicorn_workers[:1])
        killed = [f"celery soak1 (pid {victim.pid})", f"gunicorn worker {gunicorn_workers[:1]}"]
        print(f"{time.monotonic() - load_started:6.1f}s  kill -9: {', '.join(killed)}")
        time.sleep(5)
        workers["soak1"] = celery_worker("soak1", logs / "soak1.log")  # the supervisor
        time.sleep(max(args.seconds - (time.monotonic() - load_started), 0))
    except _NoKill:
        time.sleep(max(args.seconds - (time.monotonic() - load_started), 0))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    load_seconds = time.monotonic() - load_started
    time.sleep(5)  # queued re-aggregations drain
    server.send_signal(signal.SIGTERM)
    for worker in workers.values():
        worker.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    for worker in workers.values():
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill9([*children(worker.pid), worker.pid])

    if pooler is not None:
        pooler.terminate()
        pooler.wait(timeout=10)
    result = check(job_id, books, deadlocks_before)
    logged_500 = 0
    for log in logs.glob("*.log"):
        text = log.read_text(errors="replace")
        logged_500 += text.count("Internal Server Error")
    labels = len(books.acknowledged)
    errors = len(books.errors) + logged_500
    print(
        f"annotators {args.annotators}, load {load_seconds:.0f} s, "
        f"{'through PgBouncer (transaction pooling)' if pooler else 'direct'}, logs in {logs}"
    )
    print(f"labels acknowledged {labels}  ({labels / load_seconds:.1f}/s)")
    print(
        f"next p50/p95 {percentile(books.next_ms, 50):.1f} / {percentile(books.next_ms, 95):.1f} ms"
        f"   submit p50/p95 {percentile(books.submit_ms, 50):.1f} / "
        f"{percentile(books.submit_ms, 95):.1f} ms"
    )
    print(f"client: {books.uploaded} items uploaded, {books.reads} reads")
    print(f"answers: {dict(sorted(books.statuses.items()))}")
    print(f"reconnects after the kills: {books.reconnects}; 500s in the logs: {logged_500}")
    if books.errors:
        print("errors:", books.errors[:10])
    print(
        f"lost labels {result['lost']}, invariant violations {result['violations']}, "
        f"settled without label {result['empty']}, deadlocks {result['deadlocks']}"
    )
    print(f"bench wall time {time.monotonic() - started:.1f} s")
    print(
        json.dumps(
            {
                "seconds": round(load_seconds, 1),
                "labels_per_s": round(labels / load_seconds, 1),
                "errors": errors,
                "lost_labels": result["lost"],
                "invariant_violations": result["violations"],
                "empty_results": result["empty"],
                "deadlocks": result["deadlocks"],
                "next_p95_ms": round(percentile(books.next_ms, 95), 1),
                "submit_p95_ms": round(percentile(books.submit_ms, 95), 1),
                "pgbouncer": pooler is not None,
                "prepared": not (pooler is not None or args.no_prepared),
            }
        )
    )


if __name__ == "__main__":
    main()
