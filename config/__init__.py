"""Concord's Django project. The Celery app is loaded with it, so that services can hand work
to Celery by task name (apps.common.tasks) in every process."""

from workers.celery import app as celery_app

__all__ = ["celery_app"]
