"""Concord's Celery app: `celery -A workers worker` finds it here."""

from workers.celery import app

__all__ = ["app"]
