"""Benchmark a job re-aggregation in PostgreSQL: 1M labels read, aggregated, moved results written.

Run from the repository root with a scratch database of its own (dropped and re-created):
`DATABASE_URL=postgres://postgres@127.0.0.1:5432/concord_agg .venv/bin/python bench/reaggregate.py`
(`--quick`: 100k labels). A job of 200,000 items x 5 labels from 500 workers (the synthetic
crowd of bench/aggregation.py, K=4) is loaded with COPY, then `apps.quality.aggregation.
job_aggregate` runs three times: the first aggregation (every result written), a
re-aggregation with nothing new, and one after 1% of the labels changed value. The time of
each phase is measured by wrapping the service's own helpers (nothing in services.py
changes for the bench). The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["a", "b", "c", "d"]


def recreate(url: str) -> None:
    import psycopg2

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = url.rsplit("/", 1)[0] + "/postgres"
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    env = dict(os.environ, SECRET_KEY="bench-only", DEBUG="0", LOG_LEVEL="ERROR")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
    )


def _copy(model, columns: list[str], rows) -> None:
    """COPY rows (tuples in `columns` order, already text or None) into the model's table."""
    from django.db import connection

    buf = io.StringIO()
    for row in rows:
        buf.write("\t".join("\\N" if v is None else str(v) for v in row))
        buf.write("\n")
    buf.seek(0)
    with connection.cursor() as cursor:
        cursor.copy_expert(f"COPY {model._meta.db_table} ({', '.join(columns)}) FROM STDIN", buf)


def seed(n_items: int, n_workers: int) -> tuple[int, np.ndarray]:
    """The job, its workers, items (settled crowd items) and labels; returns the job id and
    the label ids in insertion order."""
    from django.db import connection

    from apps.accounts.models import Organization
    from apps.assignments.models import Assignment, Label
    from apps.jobs.models import Item, Job
    from apps.workforce.services import worker_create
    from bench.aggregation import synthetic

    client = Organization.objects.create(name="Bench Client", kind="client")
    vendor = Organization.objects.create(name="Bench Vendor", kind="vendor")
    job = Job.objects.create(
        organization=client,
        name="reaggregate",
        instructions="Pick one.",
        status=Job.Status.RUNNING,
        label_schema={"kind": "single_choice", "classes": CLASSES},
        policy={"min_labels": 5, "max_labels": 5, "gold_rate": 0.0, "aggregation": "default"},
    )
    worker_ids = [
        worker_create(organization=vendor, username=f"agg{i}")[0].pk for i in range(n_workers)
    ]
    now = datetime.now(UTC)
    stamp = now.isoformat()
    _copy(
        Item,
        [
            "job_id",
            "external_id",
            "payload",
            "state",
            "priority",
            "labels_needed",
            "n_labels",
            "n_leases",
            "vote_counts",
            "result_meta",
            "source",
            "created_at",
            "updated_at",
        ],
        (
            (job.pk, f"r{i}", "{}", "settled", 0.0, 5, 5, 0, "{}", "{}", "crowd", stamp, stamp)
            for i in range(n_items)
        ),
    )
    item_ids = np.array(
        Item.objects.filter(job=job).order_by("id").values_list("id", flat=True), dtype=np.int64
    )
    tasks, workers, labels, _ = synthetic(n_items, n_workers, 5, len(CLASSES), seed=5)
    wid = np.array(worker_ids, dtype=np.int64)
    leased = (now - timedelta(hours=1)).isoformat()
    expires = (now + timedelta(hours=1)).isoformat()
    _copy(
        Assignment,
        [
            "item_id",
            "job_id",
            "worker_id",
            "state",
            "is_gold",
            "leased_at",
            "expires_at",
            "finished_at",
        ],
        (
            (item_ids[t], job.pk, wid[w], "submitted", "f", leased, expires, stamp)
            for t, w in zip(tasks.tolist(), workers.tolist(), strict=True)
        ),
    )
    assignment_ids = Assignment.objects.filter(job=job).order_by("id").values_list("id", flat=True)
    _copy(
        Label,
        [
            "assignment_id",
            "item_id",
            "job_id",
            "worker_id",
            "value",
            "tier",
            "is_gold",
            "created_at",
        ],
        (
            (a, item_ids[t], job.pk, wid[w], CLASSES[lab], "crowd", "f", stamp)
            for a, t, w, lab in zip(
                assignment_ids.iterator(chunk_size=50_000),
                tasks.tolist(),
                workers.tolist(),
                labels.tolist(),
                strict=True,
            )
        ),
    )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    label_ids = np.array(
        Label.objects.filter(job=job).order_by("id").values_list("id", flat=True), dtype=np.int64
    )
    return job.pk, label_ids


class Phases:
    """Wall time per wrapped helper of apps.quality.aggregation, per run."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def wrap(self, module, name: str, label: str) -> None:
        original = getattr(module, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.times[label] = self.times.get(label, 0.0) + time.perf_counter() - t0

        setattr(module, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 items (100k labels)")
    opts = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit("DATABASE_URL must point at a PostgreSQL scratch database")
    n_items = 20_000 if opts.quick else 200_000
    t0 = time.perf_counter()
    recreate(url)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection

    from apps.quality import aggregation as services
    from apps.quality import algorithms

    job_id, label_ids = seed(n_items, 500)
    print(
        f"# seeded {label_ids.size:,} labels in {time.perf_counter() - t0:.0f} s", file=sys.stderr
    )
    phases = Phases()
    phases.wrap(services, "job_label_arrays", "read labels")
    phases.wrap(services, "_warm_start", "read stored matrices")
    phases.wrap(algorithms, "aggregate", "aggregate (kernel)")
    phases.wrap(services, "_write_worker_qualities", "write worker matrices")
    phases.wrap(services, "_write_item_results", "items")
    # Inside _write_item_results: the writers of the moved results (COPY beyond
    # COPY_RESULTS_ABOVE rows, unnest arrays below); the rest of it reads and compares.
    phases.wrap(services, "copy_compare_and_set", "write moved results")
    phases.wrap(services, "bulk_compare_and_set", "write moved results")
    runs = []
    for title in (
        "first aggregation (every result written)",
        "re-aggregation, nothing new",
        "re-aggregation after 1% of labels changed",
    ):
        if title.endswith("changed"):
            rng = np.random.default_rng(0)
            changed = rng.choice(label_ids, label_ids.size // 100, replace=False)
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE assignments_label SET value = (ARRAY['a','b','c','d'])[1 + (id %% 4)] "
                    "WHERE id = ANY(%s)",
                    [changed.tolist()],
                )
        phases.times = {}
        t = time.perf_counter()
        run = services.job_aggregate(job_id=job_id)
        total = time.perf_counter() - t
        times = phases.times
        write = times.pop("write moved results", 0.0)
        times["read items + compare"] = times.pop("items", 0.0) - write
        times["write moved results"] = write
        moved = services.Item.objects.filter(job_id=job_id, result_meta__run=run.pk).count()
        runs.append((title, total, dict(phases.times), moved, run.detail))
    print(
        f"Re-aggregation in PostgreSQL: {label_ids.size:,} labels, {n_items:,} items, 500 workers"
    )
    for title, total, times, moved, _ in runs:
        other = total - sum(times.values())
        split = ", ".join(f"{k} {v:.2f}" for k, v in times.items())
        print(f"  {title}: {total:.2f} s ({split}, other {other:.2f}); {moved:,} results written")
    print(f"  method: {runs[-1][4]}")
    print(
        json.dumps(
            {
                "reaggregate_seconds": round(runs[-1][1], 2),
                "first_aggregation_seconds": round(runs[0][1], 2),
                "unchanged_reaggregation_seconds": round(runs[1][1], 2),
                "labels": int(label_ids.size),
            }
        )
    )


if __name__ == "__main__":
    main()
