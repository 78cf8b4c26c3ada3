"""The annotator page: one task at a time, answered by click or number key.

Annotators and experts use the same page (an expert's lease is an escalated item). Every
action is a CSRF-protected form posted to these views, which call the same services as the
API (assignment_next / submit / skip / release) and redirect (post/redirect/get): after a
submit or a skip the next task is leased at once; release gives the item back and stops.
A GET never leases: the start page offers to resume a live lease or to start, from any job
open to the worker or from one they choose in its list. A chosen job is kept in the session:
the tasks after a submit or a skip come from it until it has nothing left for the worker, who
is then told so on the start page (never moved to another job unasked).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from apps.assignments.leasing import Idle, IdleReason
from apps.assignments.models import Assignment
from apps.assignments.records import assignment_release, assignment_skip
from apps.assignments.selectors import (
    JobChoice,
    assignment_get_for_worker,
    job_choices_for_worker,
)
from apps.common.errors import ApplicationError
from apps.common.fields import ID_MAX
from apps.jobs.kinds import answer_from_form, answer_widget
from apps.jobs.models import Job
from apps.jobs.payloads import payload_display, payload_for_worker
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.reports.selectors import worker_own_stats
from apps.reviews.selectors import feedback_list_for_worker
from apps.workforce.models import Worker
from apps.workforce.selectors import worker_for_user

# The pre-label shown with a lease, kept for the task page (the lease's GET cannot ask for
# it again: asking records that it was shown).
PRELABEL_KEY = "annotate_prelabel"
# The job the worker chose on the start page (an id; absent for any job).
CHOSEN_JOB_KEY = "annotate_job"
ANY_JOB = "any"
FEEDBACK_ROWS = 5

# The idle reason in words, and when to come back.
IDLE_WORDS: dict[str, tuple[str, str]] = {
    IdleReason.NO_OPEN_JOB: (
        "No running job is open to your pools right now.",
        "Jobs open when clients launch them and your ops team opens them to your pool.",
    ),
    IdleReason.EXHAUSTED: (
        "You have labeled or skipped everything that is left for you.",
        "New work comes when clients upload more items; check back later today.",
    ),
    IdleReason.ALL_LEASED: (
        "Every remaining item is being worked on by someone else.",
        "Leases come back as others finish or time out.",
    ),
    IdleReason.CAP_REACHED: (
        "You reached the per-worker limit of the jobs open to you.",
        "Other workers must label the rest; new jobs will reset this.",
    ),
    IdleReason.WORKER_SUSPENDED: (
        "Your account is suspended, so no tasks are handed to you.",
        "Ask your ops team why and when it will be lifted.",
    ),
    IdleReason.WORKER_BANNED: (
        "Your account is banned from labeling.",
        "Ask your ops team if you think this is a mistake.",
    ),
}


def _worker(request: HttpRequest) -> Worker:
    worker = worker_for_user(user=request.user)
    if worker is None:
        raise PermissionDenied
    return worker


def _sidebar(worker: Worker) -> dict:
    return {
        "stats": worker_own_stats(worker_id=worker.pk),
        "feedback": list(feedback_list_for_worker(worker=worker)[:FEEDBACK_ROWS]),
        "worker": worker,
    }


# A chosen job with nothing more for the worker, in words (its name is put in).
JOB_IDLE_WORDS: dict[str, tuple[str, str]] = {
    IdleReason.EXHAUSTED: (
        "You have labeled or skipped everything that is left for you in {name}.",
        "Choose another job below, or any job.",
    ),
    IdleReason.ALL_LEASED: (
        "Every remaining item of {name} is being worked on by someone else.",
        "Leases come back as others finish or time out; or choose another job below.",
    ),
    IdleReason.CAP_REACHED: (
        "You reached the per-worker limit of {name}.",
        "Other workers must label the rest; choose another job below.",
    ),
}
# Idle reasons after which the chosen job is given up (waiting will not help).
JOB_DONE = (IdleReason.EXHAUSTED, IdleReason.CAP_REACHED)


def _chosen_job(value: str) -> int | None:
    """The job id of the start page's choice; None for any job. ValueError for anything
    that is not an id (a job that is not open to the worker is the engine's to refuse)."""
    if value in ("", ANY_JOB):
        return None
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= ID_MAX:
        raise ValueError(value)
    return int(value)


def _lease_next(request: HttpRequest, worker: Worker) -> HttpResponse:
    """Lease the next task (from the chosen job, if any) and go there; the start page with
    the idle reason when none. A chosen job that is not open to the worker is refused, and
    one with nothing left for them is given up: the start page says so."""
    job_id = request.session.get(CHOSEN_JOB_KEY)
    job_id = job_id if isinstance(job_id, int) else None
    result = assignment_next(worker=worker, job_id=job_id)
    if isinstance(result, Idle):
        query = {"idle": result.reason.value}
        if job_id is not None and result.reason == IdleReason.NO_OPEN_JOB:
            # With a job given, the engine's "no open job" means: not that one.
            request.session.pop(CHOSEN_JOB_KEY, None)
            return redirect("/annotate/?refused=1")
        if job_id is not None and result.reason in JOB_IDLE_WORDS:
            query["job"] = str(job_id)
            if result.reason in JOB_DONE:
                request.session.pop(CHOSEN_JOB_KEY, None)
        if result.retry_after is not None:
            query["retry"] = str(result.retry_after)
        return redirect(f"/annotate/?{urlencode(query)}")
    request.session[PRELABEL_KEY] = {"id": result.id, "prelabel": result.prelabel}
    return redirect(f"/annotate/tasks/{result.id}/")


def _idle_words(idle: str, job: str, choices: list[JobChoice]) -> tuple[str, str] | None:
    """The idle reason in words: about the chosen job when the reason was about it."""
    if job:
        named = next((c.name for c in choices if str(c.id) == job), None)
        what, when = JOB_IDLE_WORDS[idle]
        # A job that closed since shows no name (the list shows only jobs open to them).
        return what.format(name=f"“{named}”" if named else "the job you chose"), when
    return IDLE_WORDS.get(idle)


@login_required
def start(request: HttpRequest) -> HttpResponse:
    """The start page: offers to resume a live lease or to start, from any job or one chosen
    from the list of jobs open to the worker (saying why there was no task, and when to
    come back)."""
    worker = _worker(request)
    choices = job_choices_for_worker(worker=worker)
    chosen = request.session.get(CHOSEN_JOB_KEY)
    idle = request.GET.get("idle", "")
    live = (
        Assignment.objects.filter(
            worker=worker, state=Assignment.State.LEASED, expires_at__gt=timezone.now()
        )
        .order_by("-id")
        .values_list("pk", flat=True)
        .first()
    )
    retry = request.GET.get("retry", "")
    idle_job = request.GET.get("job", "") if idle in JOB_IDLE_WORDS else ""
    words = _idle_words(idle, idle_job, choices)
    return render(
        request,
        "annotate/start.html",
        {
            **_sidebar(worker),
            "idle": idle if words else "",
            "idle_what": words[0] if words else "",
            "idle_when": words[1] if words else "",
            "retry": int(retry) if retry.isdigit() and int(retry) <= 3600 else None,
            "live": live,
            "choices": choices,
            # The radio checked: the chosen job while it has work for them, else any job.
            "checked": next((c.id for c in choices if c.id == chosen and c.available), None),
            "idle_job": bool(idle_job),
            "refused": bool(request.GET.get("refused")),
        },
    )


@login_required
@require_POST
def next_task(request: HttpRequest) -> HttpResponse:
    """Lease the next task. A `job` in the form chooses the job the next tasks come from
    ("any" or empty: any job); without one, the choice kept in the session stands."""
    worker = _worker(request)
    if "job" in request.POST:
        try:
            job_id = _chosen_job(request.POST["job"])
        except ValueError:
            return redirect("/annotate/?refused=1")
        if job_id is None:
            request.session.pop(CHOSEN_JOB_KEY, None)
        else:
            request.session[CHOSEN_JOB_KEY] = job_id
    return _lease_next(request, worker)


def _with_widget(*, job: Job, shown_payload: dict) -> dict:
    """The payload as the page shows it and, for a kind beyond single_choice, its widget."""
    widget = answer_widget(label_schema=job.label_schema, images=shown_payload["images"])
    if widget:
        shown_payload = {**shown_payload, "images": widget.pop("answer_shown_images")}
    return {"p": shown_payload, **widget}


def _render_task(
    request: HttpRequest, worker: Worker, assignment: Assignment, *, error: str = "", status=200
) -> HttpResponse:
    job = Job.objects.only("id", "name", "label_schema", "instructions").get(pk=assignment.job_id)
    payload = assignment.item.payload
    shown_payload = payload_display(payload_for_worker(payload))
    shown = request.session.get(PRELABEL_KEY) or {}
    prelabel = shown.get("prelabel") if shown.get("id") == assignment.pk else None
    return render(
        request,
        "annotate/task.html",
        {
            **_sidebar(worker),
            "assignment": assignment,
            "job": job,
            "keyed_classes": [(i + 1, c) for i, c in enumerate(job.classes)],
            **_with_widget(job=job, shown_payload=shown_payload),
            "prelabel": prelabel,
            "expires_at": assignment.expires_at,
            "seconds_left": max(0, int((assignment.expires_at - timezone.now()).total_seconds())),
            "error": error,
        },
        status=status,
    )


@login_required
def task(request: HttpRequest, assignment_id: int) -> HttpResponse:
    """One leased task. A lease that ended (submitted, skipped, expired) goes to the start."""
    worker = _worker(request)
    assignment = assignment_get_for_worker(worker=worker, assignment_id=assignment_id)
    if assignment.state != Assignment.State.LEASED or assignment.expires_at <= timezone.now():
        return redirect("/annotate/?ended=1")
    return _render_task(request, worker, assignment)


def _duration_ms(value: str) -> int | None:
    return int(value) if value.isdigit() and int(value) < 2**31 else None


@login_required
@require_POST
def submit(request: HttpRequest, assignment_id: int) -> HttpResponse:
    worker = _worker(request)
    assignment = assignment_get_for_worker(worker=worker, assignment_id=assignment_id)
    try:
        label_schema = Job.objects.values_list("label_schema", flat=True).get(pk=assignment.job_id)
        assignment_submit(
            worker=worker,
            assignment_id=assignment.pk,
            label=answer_from_form(label_schema=label_schema, text=request.POST.get("label", "")),
            duration_ms=_duration_ms(request.POST.get("duration_ms", "")),
        )
    except ApplicationError as exc:
        assignment.refresh_from_db()
        return _render_task(request, worker, assignment, error=exc.message, status=exc.status_code)
    return _lease_next(request, worker)


@login_required
@require_POST
def skip(request: HttpRequest, assignment_id: int) -> HttpResponse:
    worker = _worker(request)
    assignment = assignment_get_for_worker(worker=worker, assignment_id=assignment_id)
    try:
        assignment_skip(worker=worker, assignment_id=assignment.pk)
    except ApplicationError:
        pass  # The lease ended already (expired): moving on is what was asked.
    return _lease_next(request, worker)


@login_required
@require_POST
def release(request: HttpRequest, assignment_id: int) -> HttpResponse:
    """Give the item back for someone else and stop (the start page offers to go on)."""
    worker = _worker(request)
    assignment = assignment_get_for_worker(worker=worker, assignment_id=assignment_id)
    try:
        assignment_release(worker=worker, assignment_id=assignment.pk)
    except ApplicationError:
        pass  # Ended already: nothing to give back.
    return redirect("/annotate/?released=1")
