"""importitems JOB FILE: the command-line twin of the upload API, with a progress bar.

Exits non-zero when the file cannot be read or when any row was rejected (the good rows
are stored either way, as through the API).
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.common.errors import ApplicationError
from apps.jobs.ingest import UploadFormatError
from apps.jobs.models import Job
from apps.jobs.services import item_ingest

_SUFFIX_FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


class Command(BaseCommand):
    help = "Upload items from a JSON list, JSONL or CSV file into a job (idempotent)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("job", type=int, help="Job id")
        parser.add_argument("file", type=Path)
        parser.add_argument("--format", choices=["json", "jsonl", "csv"])
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **options) -> None:
        job = Job.objects.filter(pk=options["job"]).first()
        if job is None:
            raise CommandError(f"No job {options['job']}.")
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        fmt = options["format"] or _SUFFIX_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise CommandError("Cannot tell the format from the file name; pass --format.")
        with (
            path.open("rb") as stream,
            tqdm(
                total=path.stat().st_size,
                unit="B",
                unit_scale=True,
                desc="items",
                disable=options["no_progress"],
                file=self.stderr._out,
            ) as bar,
        ):

            def progress(rows: int) -> None:
                bar.n = stream.tell()
                bar.set_postfix(rows=rows, refresh=False)
                bar.refresh()

            try:
                report = item_ingest(job=job, stream=stream, fmt=fmt, progress=progress)
            except (UploadFormatError, ApplicationError) as exc:
                raise CommandError(str(exc)) from exc
        for error in report.errors:
            self.stderr.write(
                f"row {error['row']}: {error.get('external_id', '')} {error['errors']}"
            )
        self.stdout.write(
            f"created {report.created}, updated {report.updated}, rejected {report.rejected}"
        )
        if report.rejected:
            # Good rows are stored, but a script must be able to tell that some were not.
            raise CommandError(f"{report.rejected} row(s) rejected; the other rows were stored.")
