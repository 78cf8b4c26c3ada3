"""checkinvariants: print every broken engine invariant and wrong result; exit non-zero if any."""

from django.core.management.base import BaseCommand, CommandError

from apps.assignments.selectors import invariant_violations
from apps.jobs.models import Job
from apps.quality.aggregation import result_violations


class Command(BaseCommand):
    help = (
        "Check label budgets, one assignment per worker and item, lease and label counters, "
        "live leases on stopped jobs, the ledger against labels x prices, settled items "
        "without a label, and results against a fresh aggregation of the same answers. "
        "`repairresults` re-derives wrong results."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--job", type=int, default=None, help="Check only this job.")

    def handle(self, *args, **options) -> None:
        job_id = options["job"]
        if job_id is not None and not Job.objects.filter(pk=job_id).exists():
            raise CommandError(f"No job with id {job_id}.")
        problems = invariant_violations(job_id=job_id) + result_violations(job_id=job_id)
        for problem in problems:
            self.stdout.write(problem)
        if problems:
            raise CommandError(f"{len(problems)} invariant violation(s).")
        self.stdout.write("ok: all invariants hold")
