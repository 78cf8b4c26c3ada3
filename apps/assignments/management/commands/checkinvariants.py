"""checkinvariants: print every broken assignment-engine invariant; exit non-zero if any."""

from django.core.management.base import BaseCommand, CommandError

from apps.assignments.selectors import invariant_violations
from apps.jobs.models import Job


class Command(BaseCommand):
    help = (
        "Check label budgets, one assignment per worker and item, lease and label counters, "
        "live leases on stopped jobs, and the ledger against labels x prices."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--job", type=int, default=None, help="Check only this job.")

    def handle(self, *args, **options) -> None:
        if options["job"] is not None and not Job.objects.filter(pk=options["job"]).exists():
            # Checking nothing is not "all invariants hold": a mistyped id must not pass.
            raise CommandError(f"No job {options['job']}.")
        problems = invariant_violations(job_id=options["job"])
        for problem in problems:
            self.stdout.write(problem)
        if problems:
            raise CommandError(f"{len(problems)} invariant violation(s).")
        self.stdout.write("ok: all invariants hold")
