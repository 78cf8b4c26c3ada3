"""Benchmark: item upload and results export through the HTTP API against PostgreSQL.

What it does, in one run:

1. drops and recreates a scratch database (``concord_bench``), migrates it and creates a
   client token with ``manage.py createtoken``;
2. serves Concord with gunicorn (``config.wsgi``, one sync worker by default) on a free
   loopback port, as a separate process, so the worker's peak RSS (VmHWM) can be read;
3. uploads N items (external_id, a small payload, 64 float features) as JSON lines in ONE
   request, streamed from a file with a Content-Length, and times it end to end (then
   again into a second new job: the machine may be shared, so the best of --repeat runs
   counts and every run is printed);
4. downloads the N results as CSV and as JSONL and times each;
5. COPYs the same rows (same columns, every NOT NULL column filled) into a scratch table
   shaped like ``jobs_item`` (its indexes and checks, not its foreign key) with psycopg2's
   ``copy_expert``: the physical limit, which the ratio is taken against; for reference
   also with the foreign key, and into a bare table without indexes;
6. starts a fresh server and uploads N/4 items into another job, so the two peak RSS
   figures show whether memory grows with the number of items; then re-uploads them as
   updates (the idempotent path).

It prints a table, and as its last line one JSON object with the headline figures.

    .venv/bin/python bench/ingest.py [--items 100000] [--workers 1]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
# The interpreter running this bench (whatever virtual environment it is) and its gunicorn.
PYTHON = Path(sys.executable)
GUNICORN = PYTHON.parent / "gunicorn"
FEATURE_DIM = 64
CLASSES = ["cat", "dog", "bird"]


# --------------------------------------------------------------------------- database


def admin_connection(dsn: str):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def recreate_database(server_dsn: str, name: str) -> None:
    conn = admin_connection(server_dsn)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(PYTHON), "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


# --------------------------------------------------------------------------- data


@dataclass
class Rows:
    """The benchmark rows, generated once: the same values go through the API and COPY."""

    n: int
    features: np.ndarray  # (n, 64) float32

    @classmethod
    def make(cls, n: int, seed: int = 0) -> Rows:
        rng = np.random.default_rng(seed)
        return cls(n, rng.standard_normal((n, FEATURE_DIM)).astype("<f4"))

    @staticmethod
    def external_id(i: int) -> str:
        return f"item-{i:07d}"

    @staticmethod
    def payload(i: int) -> dict:
        return {"text": f"Picture number {i}", "url": f"https://img.example/{i}.jpg"}

    def write_jsonl(self, path: Path, n: int, salt: str = "") -> int:
        """Write the first n rows as JSON lines; returns the file size in bytes."""
        with path.open("wb") as out:
            for start in range(0, n, 10_000):
                lines = []
                for i in range(start, min(n, start + 10_000)):
                    payload = self.payload(i)
                    if salt:
                        payload["v"] = salt
                    lines.append(
                        orjson.dumps(
                            {
                                "external_id": self.external_id(i),
                                "payload": payload,
                                "features": self.features[i],
                            },
                            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE,
                        )
                    )
                out.write(b"".join(lines))
        return path.stat().st_size

    def copy_text(self, job_id: int) -> bytes:
        """The same rows in COPY text format, every NOT NULL column of jobs_item filled."""
        now = "2025-01-01 00:00:00+00"
        hexes = self.features.tobytes().hex()
        width = FEATURE_DIM * 4 * 2
        lines = []
        for i in range(self.n):
            payload = orjson.dumps(self.payload(i)).decode().replace("\\", "\\\\")
            features = "\\\\x" + hexes[i * width : (i + 1) * width]
            lines.append(
                f"{job_id}\t{self.external_id(i)}\t{payload}\t{features}\t\\N\t\\N\topen\t0\t3"
                f"\t0\t0\t{{}}\t{{}}\t{now}\t{now}\n"
            )
        return "".join(lines).encode()


COPY_COLUMNS = (
    "job_id, external_id, payload, features, prediction, gold_label, state, priority, "
    "labels_needed, n_labels, n_leases, vote_counts, result_meta, created_at, updated_at"
)


def raw_copy(dsn: str, table: str, like: str, data: bytes, *, foreign_key: bool = False) -> float:
    """Seconds to COPY `data` into a fresh scratch table and commit."""
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(f"CREATE TABLE {table} (LIKE jobs_item {like})")
        if foreign_key:
            # As jobs_item has it: checked row by row when the transaction commits.
            cur.execute(
                f"ALTER TABLE {table} ADD FOREIGN KEY (job_id) REFERENCES jobs_job (id) "
                "DEFERRABLE INITIALLY DEFERRED"
            )
    conn.commit()
    start = time.perf_counter()
    with conn.cursor() as cur:
        cur.copy_expert(f"COPY {table} ({COPY_COLUMNS}) FROM STDIN", io.BytesIO(data))
    conn.commit()
    seconds = time.perf_counter() - start
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        copied = cur.fetchone()[0]
        cur.execute(f"DROP TABLE {table}")
    conn.commit()
    conn.close()
    if copied != len(data.splitlines()):
        sys.exit(f"COPY stored {copied} rows")
    return seconds


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


class Server:
    """gunicorn serving config.wsgi in its own process group; workers are its children."""

    def __init__(self, env: dict[str, str], workers: int) -> None:
        self.port = free_port()
        self.workers = workers
        self.proc = subprocess.Popen(
            [
                str(GUNICORN),
                "config.wsgi",
                "--workers",
                str(workers),
                "--worker-class",
                "sync",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--timeout",
                "600",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, _ = self.request("GET", "/healthz")
                if status == 200 and len(self.worker_pids()) == workers:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                sys.exit("gunicorn did not come up")
            time.sleep(0.2)

    def worker_pids(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def peak_rss_mb(self) -> float:
        """The largest VmHWM among the workers (each worker serves requests alone)."""
        return max(status_kb(pid, "VmHWM") for pid in self.worker_pids()) / 1024

    def rss_mb(self) -> float:
        return max(status_kb(pid, "VmRSS") for pid in self.worker_pids()) / 1024

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=600, blocksize=1 << 20)

    def request(self, method: str, path: str, body=None, headers=None) -> tuple[int, dict, bytes]:
        conn = self.connection()
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, dict(response.getheaders()), data

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# --------------------------------------------------------------------------- API calls


def create_job(server: Server, token: str, name: str) -> int:
    spec = {"name": name, "label_schema": {"kind": "single_choice", "classes": CLASSES}}
    status, _, body = server.request(
        "POST",
        "/api/v1/jobs/",
        body=json.dumps(spec),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    if status != 201:
        sys.exit(f"job create failed: {status} {body[:500]!r}")
    return json.loads(body)["id"]


def upload(server: Server, token: str, job_id: int, path: Path) -> tuple[float, dict]:
    """POST the file as one streamed request body; seconds from first byte to the answer."""
    size = path.stat().st_size
    conn = server.connection()
    with path.open("rb") as body:
        start = time.perf_counter()
        conn.request(
            "POST",
            f"/api/v1/jobs/{job_id}/items/",
            body=body,
            headers={
                "Authorization": f"Token {token}",
                "Content-Type": "application/x-ndjson",
                "Content-Length": str(size),
            },
        )
        response = conn.getresponse()
        data = response.read()
        seconds = time.perf_counter() - start
    conn.close()
    if response.status not in (200, 201):
        sys.exit(f"upload failed: {response.status} {data[:1000]!r}")
    return seconds, json.loads(data)


def download(server: Server, token: str, job_id: int, fmt: str) -> tuple[float, int, int]:
    """GET the results; returns seconds, data rows and bytes, reading as it streams."""
    conn = server.connection()
    start = time.perf_counter()
    conn.request(
        "GET",
        f"/api/v1/jobs/{job_id}/results/?format={fmt}",
        headers={"Authorization": f"Token {token}"},
    )
    response = conn.getresponse()
    if response.status != 200:
        sys.exit(f"download failed: {response.status} {response.read()[:500]!r}")
    lines = size = 0
    last = b"\n"
    while chunk := response.read(1 << 20):
        lines += chunk.count(b"\n")
        size += len(chunk)
        last = chunk[-1:]
    seconds = time.perf_counter() - start
    conn.close()
    if last != b"\n":
        lines += 1
    rows = lines - 1 if fmt == "csv" else lines
    return seconds, rows, size


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1, help="gunicorn sync workers")
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="timed runs of the N-item upload (each into a new job) and of each raw COPY; "
        "the best counts, every run is printed (the machine may be shared)",
    )
    parser.add_argument(
        "--server-dsn", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
    )
    parser.add_argument("--database", default="concord_bench")
    args = parser.parse_args()
    args.repeat = max(1, args.repeat)
    n = args.items
    n_small = max(1, n // 4)
    dsn = f"{args.server_dsn}/{args.database}"
    started = time.perf_counter()
    load_start = os.getloadavg()[0]

    recreate_database(f"{args.server_dsn}/postgres", args.database)
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "DEBUG": "0",
        "SECRET_KEY": "concord-bench-not-a-secret",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("REDIS_URL", None)
    manage(env, "migrate", "--noinput")
    token = manage(
        env,
        "createtoken",
        "--username=bench",
        "--org=BenchCo",
        "--org-kind=client",
        "--role=client",
    ).split()[-1]

    rows = Rows.make(n)
    tmp = Path(tempfile.mkdtemp(prefix="concord-bench-"))
    big_file, small_file = tmp / "items.jsonl", tmp / "items-small.jsonl"
    big_bytes = rows.write_jsonl(big_file, n)
    rows.write_jsonl(small_file, n_small)
    update_file = tmp / "items-update.jsonl"
    rows.write_jsonl(update_file, n_small, salt="v2")

    # Run 1: a fresh server takes all N items in one request, then serves the exports.
    server = Server(env, args.workers)
    try:
        job_big = create_job(server, token, "bench-big")
        idle_mb = server.peak_rss_mb()
        up_runs = []
        for attempt in range(args.repeat):
            job = job_big if attempt == 0 else create_job(server, token, f"bench-big-{attempt}")
            seconds, report = upload(server, token, job, big_file)
            if (report["created"], report["rejected"]) != (n, 0):
                sys.exit(f"unexpected upload report: {report}")
            up_runs.append(seconds)
            if attempt == 0:
                peak_big = server.peak_rss_mb()
        up_seconds = min(up_runs)
        exports = {fmt: download(server, token, job_big, fmt) for fmt in ("csv", "jsonl")}
        peak_after_export = server.peak_rss_mb()
    finally:
        server.stop()
    for fmt, (_, got, _) in exports.items():
        if got != n:
            sys.exit(f"{fmt} export has {got} rows, expected {n}")

    # The physical limit: the same rows COPYed straight into a table shaped like jobs_item.
    data = rows.copy_text(job_big)
    shaped = "INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS INCLUDING INDEXES"
    copy_runs = [raw_copy(dsn, "bench_copy", shaped, data) for _ in range(args.repeat)]
    copy_seconds = min(copy_runs)
    copy_fk_seconds = min(
        raw_copy(dsn, "bench_copy_fk", shaped, data, foreign_key=True) for _ in range(args.repeat)
    )
    copy_bare_seconds = min(
        raw_copy(dsn, "bench_copy_bare", "INCLUDING DEFAULTS INCLUDING IDENTITY", data)
        for _ in range(args.repeat)
    )
    del data

    # Run 2: a fresh server takes N/4 items, so its peak RSS can be set beside run 1's;
    # then the same rows again with a changed payload, all updates.
    server = Server(env, args.workers)
    try:
        job_small = create_job(server, token, "bench-small")
        idle_small_mb = server.peak_rss_mb()
        small_seconds, small_report = upload(server, token, job_small, small_file)
        if (small_report["created"], small_report["rejected"]) != (n_small, 0):
            sys.exit(f"unexpected upload report: {small_report}")
        peak_small = server.peak_rss_mb()
        update_seconds, update_report = upload(server, token, job_small, update_file)
        if (update_report["created"], update_report["updated"]) != (0, n_small):
            sys.exit(f"unexpected update report: {update_report}")
    finally:
        server.stop()

    items_per_s = n / up_seconds
    copy_ratio = up_seconds / copy_seconds
    export_rates = {fmt: got / seconds for fmt, (seconds, got, _) in exports.items()}
    export_rows_per_s = min(export_rates.values())

    def line(label: str, value: str) -> None:
        print(f"  {label:<60} {value}")

    print()
    print(
        f"Concord ingest/export bench: PostgreSQL, gunicorn config.wsgi with {args.workers} "
        f"sync worker(s); peak RSS is the worker's VmHWM"
    )
    line("items per upload (one request, JSONL)", f"{n:,} ({big_bytes / 1e6:.1f} MB body)")
    line(
        f"upload through the API, best of {len(up_runs)}",
        f"{up_seconds:8.2f} s  {items_per_s:10,.0f} items/s",
    )
    line("  every run", "  ".join(f"{seconds:.2f} s" for seconds in up_runs))
    line(
        f"raw COPY, same rows, table shaped like jobs_item, best of {len(copy_runs)}",
        f"{copy_seconds:8.2f} s  {n / copy_seconds:10,.0f} rows/s",
    )
    line("  every run", "  ".join(f"{seconds:.2f} s" for seconds in copy_runs))
    line("  API / COPY", f"{copy_ratio:8.2f} x")
    line(
        "raw COPY, same, plus jobs_item's deferred FK to jobs_job, best",
        f"{copy_fk_seconds:8.2f} s  {n / copy_fk_seconds:10,.0f} rows/s",
    )
    line("  API / COPY with FK", f"{up_seconds / copy_fk_seconds:8.2f} x")
    line(
        "raw COPY, same rows, bare table (no indexes), best",
        f"{copy_bare_seconds:8.2f} s  {n / copy_bare_seconds:10,.0f} rows/s",
    )
    line("  API / bare COPY", f"{up_seconds / copy_bare_seconds:8.2f} x")
    line(
        f"upload {n_small:,} items (fresh server)",
        f"{small_seconds:8.2f} s  {n_small / small_seconds:10,.0f} items/s",
    )
    line(
        f"re-upload {n_small:,} items (all updates)",
        f"{update_seconds:8.2f} s  {n_small / update_seconds:10,.0f} items/s",
    )
    line("worker peak RSS, idle after startup", f"{idle_mb:8.1f} MB")
    line(
        f"worker peak RSS after {n_small:,} items (growth over idle)",
        f"{peak_small:8.1f} MB  (+{peak_small - idle_small_mb:.1f} MB)",
    )
    line(
        f"worker peak RSS after {n:,} items (growth over idle)",
        f"{peak_big:8.1f} MB  (+{peak_big - idle_mb:.1f} MB)",
    )
    line("worker peak RSS after both exports", f"{peak_after_export:8.1f} MB")
    for fmt, (seconds, got, size) in exports.items():
        line(
            f"export {fmt.upper()} ({size / 1e6:.1f} MB, streamed)",
            f"{seconds:8.2f} s  {got / seconds:10,.0f} rows/s",
        )
    line("Label Studio 1.23.2, for scale", "~5,300 tasks/s import; 100,000 JSON export 178 s")
    line("bench wall time", f"{time.perf_counter() - started:8.1f} s")
    line(
        f"load average at start / end ({os.cpu_count()} CPUs)",
        f"{load_start:.2f} / {os.getloadavg()[0]:.2f}",
    )
    print()
    print(
        json.dumps(
            {
                "items_per_s": round(items_per_s),
                "copy_ratio": round(copy_ratio, 2),
                "peak_rss_mb": round(max(peak_big, peak_after_export), 1),
                "export_rows_per_s": round(export_rows_per_s),
            }
        )
    )


if __name__ == "__main__":
    main()
