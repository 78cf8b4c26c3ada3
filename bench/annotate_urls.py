"""Bench-only URLs: Concord's, plus a trivial view that is the floor for this stack."""

import random

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from config.urls import urlpatterns as concord_urlpatterns


@csrf_exempt
def floor(request: HttpRequest, job_id: int) -> JsonResponse:
    """One indexed SELECT (the queue index) and one INSERT: the least a label can cost."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, payload FROM jobs_item WHERE job_id = %s AND state = 'open' "
            "ORDER BY priority DESC, id LIMIT 1 OFFSET %s",
            [job_id, random.randrange(1000)],
        )
        item_id, payload = cursor.fetchone()
        cursor.execute(
            "INSERT INTO bench_floor_log (item_id, value) VALUES (%s, %s)", [item_id, "a"]
        )
    return JsonResponse({"id": item_id, "payload": payload})


urlpatterns = [path("bench/floor/<int:job_id>/", floor), *concord_urlpatterns]
