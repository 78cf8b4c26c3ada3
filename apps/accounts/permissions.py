"""DRF permissions by role."""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from apps.accounts.models import Role
from apps.accounts.selectors import user_roles


class _HasAnyRole(BasePermission):
    roles: frozenset[str] = frozenset()
    message = "Your role does not allow this."

    def has_permission(self, request, view) -> bool:
        return bool(user_roles(user=request.user) & self.roles)


def has_role(*roles: str) -> type[BasePermission]:
    """A permission class that admits users holding any of the given roles."""
    return type(f"HasRole_{'_'.join(roles)}", (_HasAnyRole,), {"roles": frozenset(roles)})


IsClientOrOps = has_role(Role.CLIENT, Role.OPS)
IsOps = has_role(Role.OPS)
IsJobReader = has_role(Role.CLIENT, Role.OPS, Role.QC)
IsAnnotator = has_role(Role.ANNOTATOR, Role.EXPERT)
IsQC = has_role(Role.QC)
IsQCOrOps = has_role(Role.QC, Role.OPS)
