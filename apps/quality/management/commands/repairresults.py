"""repairresults: find jobs with wrong delivered results and re-derive them."""

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.jobs.models import Job
from apps.quality.aggregation import job_aggregate, result_violations


class Command(BaseCommand):
    help = (
        "Find settled items without a label and results that a fresh aggregation of the same "
        "answers contradicts (completed jobs included), re-aggregate those jobs, and check "
        "again. Exits non-zero if anything is still wrong."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--job", type=int, default=None, help="Only this job.")
        parser.add_argument(
            "--dry-run", action="store_true", help="List what is wrong; change nothing."
        )

    def handle(self, *args, **options) -> None:
        job_id = options["job"]
        jobs = Job.objects.order_by("id")
        if job_id is not None:
            jobs = jobs.filter(pk=job_id)
            if not jobs.exists():
                raise CommandError(f"No job with id {job_id}.")
        broken = []
        for job in tqdm(list(jobs), desc="checking jobs", disable=None):
            problems = result_violations(job_id=job.pk)
            if problems:
                broken.append(job.pk)
                for problem in problems:
                    self.stdout.write(problem)
        if not broken:
            self.stdout.write("ok: every delivered result holds")
            return
        if options["dry_run"]:
            raise CommandError(f"{len(broken)} job(s) with wrong results: {broken}")
        left = []
        for broken_id in tqdm(broken, desc="re-aggregating", disable=None):
            job_aggregate(job_id=broken_id)
            left.extend(result_violations(job_id=broken_id))
        for problem in left:
            self.stdout.write(problem)
        if left:
            raise CommandError(f"{len(left)} result(s) still wrong after re-aggregation.")
        self.stdout.write(f"repaired: {len(broken)} job(s) re-aggregated: {broken}")
