"""Run the dashboards' rollup now (what Celery beat runs every minute), or rebuild it."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from apps.reports.rollups import rollup_rebuild, rollup_run


class Command(BaseCommand):
    help = (
        "Roll the hours of the labels that came since the last run into the dashboards' "
        "hourly rollups; --rebuild drops them (of one --job, or all) and rolls every hour again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rebuild", action="store_true")
        parser.add_argument("--job", type=int, default=None, help="with --rebuild: this job only")

    def handle(self, *args, **options) -> None:
        if options["rebuild"]:
            run = rollup_rebuild(job_id=options["job"])
        else:
            run = rollup_run()
        self.stdout.write(
            f"{run.hours} hours rolled from {run.labels_read} labels, {run.curves} redundancy "
            f"curves; every label up to id {run.watermark} is in the rollups"
        )
