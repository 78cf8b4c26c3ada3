"""DRF permissions by role."""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from apps.accounts.selectors import user_roles


class _HasAnyRole(BasePermission):
    roles: frozenset[str] = frozenset()
    message = "Your role does not allow this."

    def has_permission(self, request, view) -> bool:
        return bool(user_roles(user=request.user) & self.roles)


def has_role(*roles: str) -> type[BasePermission]:
    """A permission class that admits users holding any of the given roles."""
    return type(f"HasRole_{'_'.join(roles)}", (_HasAnyRole,), {"roles": frozenset(roles)})


IsClientOrOps = has_role("client", "ops")
IsOps = has_role("ops")
IsJobReader = has_role("client", "ops", "qc")
IsAnnotator = has_role("annotator", "expert")
IsQC = has_role("qc")
IsQCOrOps = has_role("qc", "ops")
