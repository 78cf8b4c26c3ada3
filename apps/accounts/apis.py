"""Who am I: the caller's username, roles and organizations."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import Membership


class MeApi(APIView):
    @extend_schema(
        responses=inline_serializer(
            "Me",
            {
                "username": serializers.CharField(),
                "memberships": serializers.ListField(child=serializers.DictField()),
            },
        )
    )
    def get(self, request: Request) -> Response:
        memberships = Membership.objects.filter(user=request.user).select_related("organization")
        return Response(
            {
                "username": request.user.username,
                "memberships": [
                    {
                        "organization": m.organization.name,
                        "kind": m.organization.kind,
                        "role": m.role,
                    }
                    for m in memberships
                ],
            }
        )
