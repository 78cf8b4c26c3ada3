"""checkinvariants: print every broken assignment-engine invariant; exit non-zero if any."""

from django.core.management.base import BaseCommand, CommandError

from apps.assignments.selectors import invariant_violations


class Command(BaseCommand):
    help = (
        "Check label budgets, one assignment per worker and item, lease and label counters, "
        "live leases on stopped jobs, and the ledger against labels x prices."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--job", type=int, default=None, help="Check only this job.")

    def handle(self, *args, **options) -> None:
        problems = invariant_violations(job_id=options["job"])
        for problem in problems:
            self.stdout.write(problem)
        if problems:
            raise CommandError(f"{len(problems)} invariant violation(s).")
        self.stdout.write("ok: all invariants hold")
