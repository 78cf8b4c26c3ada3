"""Benchmark: every dashboard page and the metrics API with 1,000,000 labels in PostgreSQL.

What it does, in one run:

1. drops and recreates a scratch database (``concord_bench_dashboards``, or the database of
   ``DATABASE_URL`` when it names a PostgreSQL one), migrates it, and creates two clients,
   two vendors, 620 workers (ten of them experts, 5% spammers) in three pools, and four
   running jobs of 600k, 250k, 100k and 50k labels;
2. loads the items, assignments, labels (10% of them on gold items) and their ledger
   credits with COPY: two weeks of work in shifts (each worker labels eight hours a day), up
   to the current minute, with a few thousand open reviews;
3. runs the rollup (``apps.reports.rollups.rollup_run``, what the Celery beat task runs)
   over all of it, then once more as the beat would a minute later;
4. times every dashboard page (as the first vendor's ops and as the big job's client) and
   ``GET /api/v1/jobs/{id}/metrics/``, ``GET /api/v1/metrics/`` and
   ``GET /api/v1/pools/{id}/metrics/`` through Django's test client (the whole stack but
   the socket: middleware, session or token auth, templates), in rounds: every page once
   per round, so that the shared machine's slow spells fall on all of them; beside them a
   baseline page (the new-job form: session, role check, template, no figures) measured in
   the same rounds, for the ratio.

It prints a table (p50 / p95 per page, the ratio to the baseline's p95) and as its last
line one JSON object: {"labels": .., "p95_ms": .. (the slowest page's p95), "pages": ..}.

    .venv/bin/python bench/dashboards.py [--labels 1000000] [--rounds 30]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/concord_bench_dashboards"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
CLASSES = ["cat", "dog", "bird"]
# The four jobs' shares of the labels, their client and how many workers label each.
JOBS = [(0.60, "Acme", 300), (0.25, "Acme", 150), (0.10, "Globex", 100), (0.05, "Acme", 50)]
N_WORKERS = 620  # 400 for the first vendor (ten experts), 220 for the second
GOLD_ITEMS = 200  # per job
DAYS = 14
SHIFT_HOURS = 8
CROWD_PRICE = "0.0500"
EXPERT_PRICE = "0.5000"


def database_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith("postgres") else DEFAULT_DB


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        DJANGO_SETTINGS_MODULE="config.settings",
        SECRET_KEY="bench-only-secret",
        DEBUG="0",  # DEBUG records every query; production speed needs it off
        ALLOWED_HOSTS="testserver,127.0.0.1,localhost",
        LOG_LEVEL="ERROR",
        REDIS_URL=REDIS_URL,
        CACHE_URL=REDIS_URL,
        CELERY_QUEUE="bench-dashboards",
    )
    return env


def recreate_database() -> None:
    import psycopg2
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    url = database_url()
    name = urlparse(url).path.lstrip("/")
    conn = psycopg2.connect(url.rsplit("/", 1)[0] + "/postgres")
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=_env(), check=True
    )


# --------------------------------------------------------------------------- data


def _copy(table: str, columns: list[str], lines: list[str]) -> None:
    from django.db import connection

    buf = io.StringIO("".join(lines))
    with connection.cursor() as cursor:
        cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buf)


def _stamps(seconds: np.ndarray) -> list[str]:
    """Epoch seconds as PostgreSQL timestamptz text."""
    text = np.datetime_as_string((seconds * 1e6).astype("datetime64[us]"), unit="us")
    return [f"{t}+00" for t in text.tolist()]


class Loader:
    """Generates the jobs' items and labels with numpy and COPYs them, ids chosen here."""

    def __init__(self, n_labels: int, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        self.n_labels = n_labels
        self.now = datetime.now(UTC)
        self.item_id = 0
        self.pending: list[dict[str, np.ndarray]] = []

    def people(self) -> dict:
        from apps.accounts.models import Organization
        from apps.accounts.services import contract_set, membership_ensure, token_create
        from apps.workforce.models import Pool, Worker
        from apps.workforce.services import worker_create

        for name in ("Acme", "Globex"):
            Organization.objects.create(name=name, kind="client")
        v1 = Organization.objects.create(name="Vendor One", kind="vendor")
        v2 = Organization.objects.create(name="Vendor Two", kind="vendor")
        for client in ("Acme", "Globex"):
            for vendor in ("Vendor One", "Vendor Two"):
                contract_set(client_name=client, vendor_name=vendor)
        workers = []
        for i in range(N_WORKERS):
            org = v1 if i < 400 else v2
            tier = Worker.Tier.EXPERT if i < 10 else Worker.Tier.CROWD
            workers.append(worker_create(organization=org, username=f"w{i:03d}", tier=tier)[0])
        pools = [
            Pool.objects.create(organization=v1, name="Day shift"),
            Pool.objects.create(organization=v1, name="Night shift"),
            Pool.objects.create(organization=v2, name="Crowd"),
        ]
        pools[0].members.add(*workers[:200])
        pools[1].members.add(*workers[200:400])
        pools[2].members.add(*workers[400:])
        ops = membership_ensure(
            username="ops1", org_name="Vendor One", org_kind="vendor", role="ops"
        ).user
        client = membership_ensure(
            username="client1", org_name="Acme", org_kind="client", role="client"
        ).user
        return {
            "workers": np.array([w.pk for w in workers]),
            "tiers": np.array([w.tier for w in workers]),
            "pools": pools,
            "ops": ops,
            "ops_token": token_create(user=ops),
            "client": client,
            "client_token": token_create(user=client),
        }

    def job(self, share: float, client: str, n_job_workers: int, people: dict, index: int):
        from apps.accounts.models import Organization
        from apps.jobs.models import Job
        from apps.workforce.services import pool_job_open

        rng = self.rng
        job = Job.objects.create(
            organization=Organization.objects.get(name=client),
            name=f"Bench job {index + 1}",
            instructions="Which animal is in the photo?",
            status=Job.Status.RUNNING,
            label_schema={"kind": "single_choice", "classes": CLASSES},
            policy={"min_labels": 3, "max_labels": 5, "gold_rate": 0.1},
            pricing={"crowd_label": float(CROWD_PRICE), "expert_label": float(EXPERT_PRICE)},
        )
        for pool in people["pools"]:
            pool_job_open(pool=pool, job=job)
        n_labels = int(self.n_labels * share)
        # The job's workers: a slice of everyone (overlapping between jobs), experts included.
        start = (index * 97) % N_WORKERS
        pick = 10 + (start + np.arange(n_job_workers)) % (N_WORKERS - 10)  # crowd workers
        pick[:2] = [index, index + 4]  # and two of the ten experts
        worker_ids = people["workers"][pick]
        expert = people["tiers"][pick] == "expert"
        accuracy = rng.uniform(0.78, 0.96, n_job_workers)
        spammer = rng.random(n_job_workers) < 0.05
        accuracy[spammer] = 1 / 3
        shift = rng.integers(0, 24, n_job_workers)

        per_gold = min(n_job_workers, int(n_labels * 0.1) // GOLD_ITEMS)
        regular = n_labels - per_gold * GOLD_ITEMS
        ks = rng.choice([3, 4, 5], p=[0.7, 0.2, 0.1], size=int(regular / 3.4) + 10)
        ks = ks[np.cumsum(ks) <= regular]
        n_regular = ks.size
        ks = np.concatenate([ks, np.full(GOLD_ITEMS, per_gold)])
        n_items = ks.size
        item_ids = self.item_id + 1 + np.arange(n_items)
        self.item_id += n_items
        truth = rng.integers(0, 3, n_items)
        is_gold_item = np.arange(n_items) >= n_regular

        total = int(ks.sum())
        of_item = np.repeat(np.arange(n_items), ks)
        rank = np.arange(total) - np.repeat(np.cumsum(ks) - ks, ks)
        first = rng.integers(0, n_job_workers, n_items)
        who = (np.repeat(first, ks) + rank) % n_job_workers
        right = rng.random(total) < accuracy[who]
        value = np.where(right, truth[of_item], (truth[of_item] + rng.integers(1, 3, total)) % 3)
        day0 = (self.now - timedelta(days=DAYS - 1)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        seconds = (
            day0.timestamp()
            + rng.integers(0, DAYS, total) * 86400.0
            + ((shift[who] + rng.integers(0, SHIFT_HOURS, total)) % 24) * 3600.0
            + rng.random(total) * 3600.0
        )
        seconds = np.where(seconds > self.now.timestamp(), seconds - 86400.0, seconds)
        duration = np.where(
            spammer[who], rng.integers(300, 700, total), rng.integers(1500, 9000, total)
        )

        # Items: gold ones open; regular ones mostly settled, some open, some in review.
        roll = rng.random(n_items)
        state = np.where(roll < 0.80, "settled", np.where(roll < 0.95, "open", "review"))
        state[is_gold_item] = "open"
        source_roll = rng.random(n_items)
        source = np.where(
            source_roll < 0.85, "crowd", np.where(source_roll < 0.95, "model", "expert")
        )
        last = np.full(n_items, day0.timestamp())
        np.maximum.at(last, of_item, seconds)
        item_stamps = _stamps(last)
        now_text = _stamps(np.array([self.now.timestamp()]))[0]
        null = "\\N"
        lines = []
        for i in range(n_items):
            gold = CLASSES[truth[i]] if is_gold_item[i] else null
            settled = state[i] == "settled"
            needed = ks[i] + (1 if state[i] == "open" and not is_gold_item[i] else 0)
            label = CLASSES[truth[i]] if settled else null
            came_from = source[i] if settled else null
            settled_at = item_stamps[i] if settled else null
            lines.append(
                f"{item_ids[i]}\t{job.pk}\tb{index}-{i}\t{{}}\t{gold}\t{state[i]}\t0\t{needed}"
                f"\t{ks[i]}\t0\t{{}}\t{{}}\t{label}\t{came_from}\t{settled_at}"
                f"\t{now_text}\t{now_text}\n"
            )
        _copy(
            "jobs_item",
            "id job_id external_id payload gold_label state priority labels_needed n_labels "
            "n_leases vote_counts result_meta label source settled_at created_at "
            "updated_at".split(),
            lines,
        )
        self.pending.append(
            {
                "job": np.full(total, job.pk),
                "item": item_ids[of_item],
                "worker": worker_ids[who],
                "value": np.array(CLASSES)[value],
                "tier": np.where(expert[who], "expert", "crowd"),
                "duration": duration,
                "gold": np.where(is_gold_item[of_item], "t", "f"),
                "correct": np.where(
                    is_gold_item[of_item], np.where(value == truth[of_item], "t", "f"), null
                ),
                "seconds": seconds,
            }
        )
        self._reviews(job, item_ids[state == "review"], last[state == "review"])
        return job, total

    def labels(self) -> None:
        """Every job's labels, ids in the order they were made (as the sequence gives them),
        with their assignments and ledger credits."""
        cols = {k: np.concatenate([p[k] for p in self.pending]) for k in self.pending[0]}
        order = np.argsort(cols["seconds"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
        n = order.size
        ids = (1 + np.arange(n)).tolist()
        stamps = _stamps(cols["seconds"])
        job, item, worker = (cols[k].tolist() for k in ("job", "item", "worker"))
        gold = cols["gold"].tolist()
        _copy(
            "assignments_assignment",
            "id item_id job_id worker_id state is_gold leased_at expires_at finished_at".split(),
            [
                f"{a}\t{it}\t{j}\t{w}\tsubmitted\t{g}\t{leased}\t{expires}\t{t}\n"
                for a, it, j, w, g, leased, expires, t in zip(
                    ids,
                    item,
                    job,
                    worker,
                    gold,
                    _stamps(cols["seconds"] - 60),
                    _stamps(cols["seconds"] + 540),
                    stamps,
                    strict=True,
                )
            ],
        )
        _copy(
            "assignments_label",
            "id assignment_id item_id job_id worker_id value tier duration_ms is_gold "
            "is_correct created_at".split(),
            [
                f"{a}\t{a}\t{it}\t{j}\t{w}\t{v}\t{tier}\t{d}\t{g}\t{c}\t{t}\n"
                for a, it, j, w, v, tier, d, g, c, t in zip(
                    ids,
                    item,
                    job,
                    worker,
                    cols["value"].tolist(),
                    cols["tier"].tolist(),
                    cols["duration"].tolist(),
                    gold,
                    cols["correct"].tolist(),
                    stamps,
                    strict=True,
                )
            ],
        )
        price = np.where(cols["tier"] == "expert", EXPERT_PRICE, CROWD_PRICE).tolist()
        _copy(
            "workforce_ledgerentry",
            "id worker_id job_id label_id kind amount idempotency_key note created_at".split(),
            [
                f"{a}\t{w}\t{j}\t{a}\tlabel\t{p}\tlabel:{a}\t\t{t}\n"
                for a, w, j, p, t in zip(ids, worker, job, price, stamps, strict=True)
            ],
        )
        self.pending = []

    def _reviews(self, job, item_ids: np.ndarray, seconds: np.ndarray) -> None:
        stamps = _stamps(seconds)
        _copy(
            "reviews_review",
            "job_id item_id reason status base_priority priority note context created_at "
            "updated_at".split(),
            [
                f"{job.pk}\t{i}\tdisagreement\topen\t1\t1\t\t{{}}\t{t}\t{t}\n"
                for i, t in zip(item_ids.tolist(), stamps, strict=True)
            ],
        )

    def finish(self, people: dict) -> None:
        from django.db import connection

        from apps.workforce.models import LedgerEntry

        with connection.cursor() as cursor:
            for table in (
                "jobs_item",
                "assignments_assignment",
                "assignments_label",
                "workforce_ledgerentry",
                "reviews_review",
            ):
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
        # A few bonuses, as ops pay them.
        LedgerEntry.objects.bulk_create(
            [
                LedgerEntry(
                    worker_id=int(people["workers"][i]),
                    job_id=1 + i % 4,
                    kind="bonus",
                    amount="2.5000",
                    idempotency_key=f"bonus-{i}",
                )
                for i in range(10, 60)
            ]
        )
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")


# --------------------------------------------------------------------------- timing


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=30)
    opts = parser.parse_args()

    t0 = time.perf_counter()
    recreate_database()
    os.environ.update(_env())
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection
    from django.test import Client

    from apps.assignments.models import Label
    from apps.reports.rollups import rollup_run

    loader = Loader(opts.labels)
    people = loader.people()
    jobs = []
    for index, (share, client, n_workers) in enumerate(JOBS):
        job, n = loader.job(share, client, n_workers, people, index)
        jobs.append(job)
        print(f"# job {job.pk}: {n:,} labels", file=sys.stderr)
    loader.labels()
    loader.finish(people)
    n_labels = Label.objects.count()
    load_s = time.perf_counter() - t0
    print(f"# loaded {n_labels:,} labels in {load_s:.0f} s", file=sys.stderr)

    t = time.perf_counter()
    first = rollup_run()
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    again = rollup_run()
    again_s = time.perf_counter() - t
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        cursor.execute("SELECT count(*) FROM reports_workerhour")
        worker_rows = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM reports_jobhour")
        job_rows = cursor.fetchone()[0]

    big = jobs[0]
    pool = people["pools"][0]
    busiest = (
        Label.objects.filter(job=big, worker__organization__name="Vendor One", tier="crowd")
        .values_list("worker_id", flat=True)
        .order_by("worker_id")
        .first()
    )
    ops, client = Client(), Client()
    ops.force_login(people["ops"])
    client.force_login(people["client"])
    ops_api = {"HTTP_AUTHORIZATION": f"Token {people['ops_token']}"}
    client_api = {"HTTP_AUTHORIZATION": f"Token {people['client_token']}"}
    pages = [
        ("baseline: new-job form (client)", client, "/dashboard/jobs/new/", {}),
        ("/dashboard/ (ops)", ops, "/dashboard/", {}),
        ("/dashboard/ (client)", client, "/dashboard/", {}),
        ("job page, 24 h (ops)", ops, f"/dashboard/jobs/{big.pk}/", {}),
        ("job page, 7 days (ops)", ops, f"/dashboard/jobs/{big.pk}/?hours=168", {}),
        ("job page, 24 h (client)", client, f"/dashboard/jobs/{big.pk}/", {}),
        ("pool page (ops)", ops, f"/dashboard/pools/{pool.pk}/", {}),
        ("worker page (ops)", ops, f"/dashboard/workers/{busiest}/", {}),
        ("GET jobs/{id}/metrics/ (client)", client, f"/api/v1/jobs/{big.pk}/metrics/", client_api),
        ("GET jobs/{id}/metrics/ (ops)", ops, f"/api/v1/jobs/{big.pk}/metrics/", ops_api),
        ("GET metrics/ (client)", client, "/api/v1/metrics/", client_api),
        ("GET pools/{id}/metrics/ (ops)", ops, f"/api/v1/pools/{pool.pk}/metrics/", ops_api),
    ]
    times: dict[str, list[float]] = {name: [] for name, *_ in pages}
    for round_ in range(opts.rounds + 2):
        for name, who, url, headers in pages:
            t = time.perf_counter()
            response = who.get(url, **headers)
            if hasattr(response, "streaming_content"):
                b"".join(response.streaming_content)
            elapsed = (time.perf_counter() - t) * 1000
            if response.status_code != 200:
                sys.exit(f"{url}: {response.status_code}")
            if round_ >= 2:  # two warm-up rounds
                times[name].append(elapsed)

    base = percentile(times[pages[0][0]], 0.95)
    print(
        f"Dashboards with {n_labels:,} labels in PostgreSQL ({len(jobs)} jobs, "
        f"{N_WORKERS} workers, {DAYS} days); rollups: {job_rows:,} job-hours, "
        f"{worker_rows:,} worker-hours"
    )
    print(
        f"  load {load_s:.0f} s; first rollup {first_s:.1f} s ({first.hours:,} hours, "
        f"{first.labels_read:,} labels read); the next run {again_s:.2f} s "
        f"({again.hours} hours re-rolled, {again.labels_read:,} labels read)"
    )
    print(f"  {opts.rounds} rounds, every page once per round, Django test client, DEBUG off")
    print(f"  {'page':<36} {'p50 ms':>8} {'p95 ms':>8} {'p95 / baseline':>15}")
    worst = 0.0
    for name, *_ in pages:
        p50, p95 = statistics.median(times[name]), percentile(times[name], 0.95)
        if not name.startswith("baseline"):
            worst = max(worst, p95)
        print(f"  {name:<36} {p50:>8.1f} {p95:>8.1f} {p95 / base:>14.1f}x")
    goal = "met" if worst < 300 else "NOT met"
    print(f"  slowest p95 {worst:.1f} ms: the 300 ms goal is {goal}")
    print(
        json.dumps(
            {
                "labels": n_labels,
                "p95_ms": round(worst, 1),
                "pages": len(pages) - 1,
                "baseline_p95_ms": round(base, 1),
                "rollup_first_s": round(first_s, 1),
                "rollup_next_s": round(again_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
