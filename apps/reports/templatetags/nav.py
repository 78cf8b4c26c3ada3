"""The pages' navigation: the links a signed-in person's roles open, nothing else."""

from __future__ import annotations

from django import template

from apps.accounts.models import Role
from apps.accounts.selectors import user_roles

register = template.Library()

# (roles that open it, path, text), in header order.
LINKS = [
    ({Role.ANNOTATOR, Role.EXPERT}, "/annotate/", "Label"),
    ({Role.OPS, Role.CLIENT, Role.QC}, "/dashboard/", "Dashboard"),
    ({Role.QC}, "/qc/", "QC review"),
    ({Role.OPS, Role.CLIENT, Role.QC}, "/api/docs/", "API"),
]


@register.simple_tag
def nav_links(user) -> list[tuple[str, str]]:
    roles = user_roles(user=user)
    return [(path, text) for opens, path, text in LINKS if roles & opens]
