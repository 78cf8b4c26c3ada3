"""contract: list, start or end the contract that lets a vendor's staff serve a client.

A management command sits above every app, so it may close pools (workforce) when a
contract (accounts) ends.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from apps.accounts.models import VendorContract
from apps.accounts.services import contract_set
from apps.common.errors import ApplicationError
from apps.jobs.models import Job
from apps.workforce.models import Pool
from apps.workforce.services import pool_job_close


class Command(BaseCommand):
    help = (
        "Start (or with --deactivate end) the contract between a client and a vendor "
        "organization; with no arguments, list the contracts. Ending one also closes the "
        "client's jobs to the vendor's pools, so that the vendor's access ends with it."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--client", help="Client organization name")
        parser.add_argument("--vendor", help="Vendor organization name")
        parser.add_argument(
            "--deactivate", action="store_true", help="End the contract instead of starting it."
        )
        parser.add_argument("--note", default=None, help="Reference or terms, for people.")

    def handle(self, *args, **options) -> None:
        client, vendor = options["client"], options["vendor"]
        if not client and not vendor:
            self._list()
            return
        if not (client and vendor):
            raise CommandError("Name both --client and --vendor (or neither, to list).")
        active = not options["deactivate"]
        with transaction.atomic():
            try:
                contract, created = contract_set(
                    client_name=client, vendor_name=vendor, active=active, note=options["note"]
                )
            except ApplicationError as exc:
                raise CommandError(exc.message) from exc
            closed = 0 if active else self._close_pools(contract)
        state = "active" if contract.active else "inactive"
        verb = "created" if created else "updated"
        extra = f"; closed {closed} pool/job opening(s)" if closed else ""
        self.stdout.write(f"{vendor} serves {client}: {state} ({verb}){extra}")

    def _close_pools(self, contract: VendorContract) -> int:
        """Close every job of the client to the vendor's pools; how many openings closed."""
        closed = 0
        pools = Pool.objects.filter(organization_id=contract.vendor_id)
        for pool in pools:
            for job in Job.objects.filter(organization_id=contract.client_id, pools=pool):
                closed += pool_job_close(pool=pool, job=job)
        return closed

    def _list(self) -> None:
        rows = VendorContract.objects.select_related("client", "vendor").order_by(
            "vendor__name", "client__name"
        )
        for row in rows:
            state = "active" if row.active else "inactive"
            self.stdout.write(f"{row.vendor.name}\t{row.client.name}\t{state}")
