from django.apps import AppConfig


class AssignmentsConfig(AppConfig):
    name = "apps.assignments"
    label = "assignments"

    def ready(self) -> None:
        from django.db.models.signals import m2m_changed, post_delete, post_save

        from apps.assignments.fastpath import SERVED_COUNTS, forget_open_jobs
        from apps.common.views import HEALTH_FIGURES
        from apps.jobs.models import Job
        from apps.workforce.models import Pool

        # The per-process cache of each worker's open jobs forgets on any change here.
        for through in (Pool.members.through, Pool.jobs.through):
            m2m_changed.connect(
                forget_open_jobs, sender=through, dispatch_uid=f"open-jobs-{through}"
            )
        # (Rows written directly into the through tables send no signals: the services that
        # do so, pool_job_open and pool_job_close, call forget_open_jobs themselves.)
        for model in (Job, Pool):
            post_save.connect(
                forget_open_jobs, sender=model, dispatch_uid=f"open-jobs-save-{model}"
            )
            post_delete.connect(
                forget_open_jobs, sender=model, dispatch_uid=f"open-jobs-del-{model}"
            )
        # Which write path served this process's leases and submits (/healthz "process").
        HEALTH_FIGURES["write_paths"] = lambda: {path.value: n for path, n in SERVED_COUNTS.items()}
