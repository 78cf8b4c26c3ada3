"""factory_boy factories and helpers for workforce and assignment tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import factory

from apps.accounts.models import Organization
from apps.accounts.services import contract_set
from apps.jobs.models import Item, Job
from apps.workforce.models import Pool, Worker
from apps.workforce.services import pool_job_open, worker_create

VENDOR = "Concord Vendor"
_usernames = itertools.count(1)


class ClientOrgFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization
        django_get_or_create = ("name",)
        skip_postgeneration_save = True

    name = "Acme Client"
    kind = Organization.Kind.CLIENT

    @factory.post_generation
    def contract(self, create: bool, extracted: object, **kwargs: object) -> None:
        """Concord Vendor serves the client (pass contract=False for a client it does not)."""
        if create and extracted is not False:
            VendorOrgFactory()
            contract_set(client_name=self.name, vendor_name=VENDOR)


class VendorOrgFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization
        django_get_or_create = ("name",)

    name = VENDOR
    kind = Organization.Kind.VENDOR


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Job

    organization = factory.SubFactory(ClientOrgFactory)
    name = factory.Sequence(lambda n: f"job {n}")
    instructions = "Pick the animal."
    status = Job.Status.RUNNING
    label_schema = factory.LazyFunction(
        lambda: {"kind": "single_choice", "classes": ["cat", "dog", "bird"]}
    )
    # Majority vote ("mv"): these tests pin the engine's own decision, not the quality engine's.
    policy = factory.LazyFunction(
        lambda: {"min_labels": 3, "max_labels": 5, "gold_rate": 0.0, "aggregation": "mv"}
    )
    pricing = factory.LazyFunction(lambda: {"crowd_label": 0.05, "expert_label": 0.5})


def make_items(
    job: Job,
    n: int,
    *,
    labels_needed: int | None = None,
    priorities: Sequence[float] | None = None,
    gold: Iterable[str] = (),
    prefix: str = "it",
) -> list[Item]:
    """Bulk-create n regular items (then the given gold items) and return them in id order."""
    needed = labels_needed or job.spec.policy.min_labels
    rows = [
        Item(
            job=job,
            external_id=f"{prefix}-{i}",
            payload={"text": f"item {i}"},
            labels_needed=needed,
            priority=priorities[i] if priorities else 0.0,
        )
        for i in range(n)
    ]
    rows += [
        Item(job=job, external_id=f"gold-{i}", payload={"text": f"gold {i}"}, gold_label=g)
        for i, g in enumerate(gold)
    ]
    Item.objects.bulk_create(rows)
    return list(Item.objects.filter(job=job).order_by("id"))


def make_worker(*, tier: str = Worker.Tier.CROWD, username: str | None = None) -> Worker:
    worker, _ = worker_create(
        organization=VendorOrgFactory(),
        username=username or f"w{next(_usernames)}",
        tier=tier,
    )
    return worker


def make_pool(*, jobs: Iterable[Job] = (), workers: Iterable[Worker] = (), name: str = "") -> Pool:
    pool = Pool.objects.create(
        organization=VendorOrgFactory(), name=name or f"pool {next(_usernames)}"
    )
    pool.members.set(list(workers))
    for job in jobs:
        pool_job_open(pool=pool, job=job)
    return pool
