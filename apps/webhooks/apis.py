"""Client API for webhooks: endpoints (CRUD, ping), their deliveries, replay."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import Organization, Role
from apps.accounts.permissions import has_role
from apps.accounts.selectors import user_client_org_ids
from apps.common.errors import ApplicationError
from apps.webhooks import selectors, services
from apps.webhooks.models import Event, WebhookDelivery, WebhookEndpoint

IsClient = has_role(Role.CLIENT)

_SUBSCRIBABLE = [(e.value, e.label) for e in Event if e != Event.PING]


class WebhookEndpointOutputSerializer(serializers.ModelSerializer):
    organization = serializers.CharField(source="organization.name")
    secret_hint = serializers.SerializerMethodField(help_text="The secret's last 4 characters.")

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "organization",
            "url",
            "events",
            "active",
            "description",
            "secret_hint",
            "created_at",
            "updated_at",
        ]

    def get_secret_hint(self, endpoint: WebhookEndpoint) -> str:
        return "…" + endpoint.secret[-4:]


class WebhookEndpointCreatedSerializer(WebhookEndpointOutputSerializer):
    secret = serializers.CharField(help_text="Shown once: keep it to verify signatures.")

    class Meta(WebhookEndpointOutputSerializer.Meta):
        fields = [*WebhookEndpointOutputSerializer.Meta.fields, "secret"]


class WebhookEndpointInputSerializer(serializers.Serializer):
    url = serializers.URLField(max_length=2000)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=_SUBSCRIBABLE),
        required=False,
        help_text="Default: every event except item.finalized (opt-in, batched).",
    )
    secret = serializers.CharField(
        min_length=16, max_length=128, required=False, help_text="Default: a generated one."
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    active = serializers.BooleanField(required=False, default=True)
    organization = serializers.CharField(
        required=False, help_text="Client organization name; needed if you are in several."
    )


class WebhookEndpointUpdateSerializer(serializers.Serializer):
    url = serializers.URLField(max_length=2000, required=False)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=_SUBSCRIBABLE), required=False
    )
    secret = serializers.CharField(min_length=16, max_length=128, required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    active = serializers.BooleanField(required=False)


class WebhookDeliveryOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "endpoint",
            "event",
            "event_id",
            "payload",
            "status",
            "attempts",
            "last_response_code",
            "last_error",
            "next_attempt_at",
            "replay_of",
            "created_at",
            "delivered_at",
        ]


def _organization_for_endpoint(request: Request, name: str | None) -> Organization:
    orgs = Organization.objects.filter(pk__in=user_client_org_ids(user=request.user))
    if name:
        orgs = orgs.filter(name=name)
    found = list(orgs[:2])
    if len(found) != 1:
        raise ApplicationError(
            "Name the organization the endpoint is for."
            if found
            else "You are in no such organization.",
            details={"organization": "ambiguous" if found else "unknown"},
        )
    return found[0]


class WebhookEndpointListCreateApi(generics.ListAPIView):
    permission_classes = [IsClient]
    serializer_class = WebhookEndpointOutputSerializer

    def get_queryset(self) -> QuerySet[WebhookEndpoint]:
        if getattr(self, "swagger_fake_view", False):
            return WebhookEndpoint.objects.none()
        return selectors.webhook_endpoints_for_user(user=self.request.user)

    @extend_schema(
        request=WebhookEndpointInputSerializer, responses={201: WebhookEndpointCreatedSerializer}
    )
    def post(self, request: Request) -> Response:
        data = WebhookEndpointInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        organization = _organization_for_endpoint(request, values.pop("organization", None))
        endpoint = services.webhook_endpoint_create(
            organization=organization, created_by=request.user, **values
        )
        return Response(
            WebhookEndpointCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED
        )


class WebhookEndpointDetailApi(APIView):
    permission_classes = [IsClient]

    def _endpoint(self, request: Request, endpoint_id: int) -> WebhookEndpoint:
        return selectors.webhook_endpoint_get_for_user(user=request.user, endpoint_id=endpoint_id)

    @extend_schema(responses=WebhookEndpointOutputSerializer)
    def get(self, request: Request, endpoint_id: int) -> Response:
        return Response(WebhookEndpointOutputSerializer(self._endpoint(request, endpoint_id)).data)

    @extend_schema(
        request=WebhookEndpointUpdateSerializer, responses=WebhookEndpointOutputSerializer
    )
    def patch(self, request: Request, endpoint_id: int) -> Response:
        endpoint = self._endpoint(request, endpoint_id)
        data = WebhookEndpointUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        endpoint = services.webhook_endpoint_update(
            endpoint=endpoint, changes=dict(data.validated_data)
        )
        return Response(WebhookEndpointOutputSerializer(endpoint).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, endpoint_id: int) -> Response:
        services.webhook_endpoint_delete(endpoint=self._endpoint(request, endpoint_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookEndpointPingApi(APIView):
    permission_classes = [IsClient]

    @extend_schema(request=None, responses={202: WebhookDeliveryOutputSerializer})
    def post(self, request: Request, endpoint_id: int) -> Response:
        endpoint = selectors.webhook_endpoint_get_for_user(
            user=request.user, endpoint_id=endpoint_id
        )
        delivery = services.webhook_ping(endpoint=endpoint)
        delivery.refresh_from_db()
        return Response(
            WebhookDeliveryOutputSerializer(delivery).data, status=status.HTTP_202_ACCEPTED
        )


class WebhookDeliveryListApi(generics.ListAPIView):
    permission_classes = [IsClient]
    serializer_class = WebhookDeliveryOutputSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("endpoint", int, description="Only this endpoint's deliveries."),
            OpenApiParameter("status", str, enum=[s.value for s in WebhookDelivery.Status]),
            OpenApiParameter("event", str, enum=[e.value for e in Event]),
        ]
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[WebhookDelivery]:
        if getattr(self, "swagger_fake_view", False):
            return WebhookDelivery.objects.none()
        params = self.request.query_params
        endpoint = params.get("endpoint")
        if endpoint is not None and not endpoint.isdigit():
            raise ApplicationError("endpoint must be an id.", details={"endpoint": "invalid"})
        return selectors.webhook_deliveries_for_user(
            user=self.request.user,
            endpoint_id=int(endpoint) if endpoint is not None else None,
            status=params.get("status"),
            event=params.get("event"),
        )


class WebhookDeliveryDetailApi(APIView):
    permission_classes = [IsClient]

    @extend_schema(responses=WebhookDeliveryOutputSerializer)
    def get(self, request: Request, delivery_id: int) -> Response:
        delivery = selectors.webhook_delivery_get_for_user(
            user=request.user, delivery_id=delivery_id
        )
        return Response(WebhookDeliveryOutputSerializer(delivery).data)


class WebhookDeliveryReplayApi(APIView):
    permission_classes = [IsClient]

    @extend_schema(request=None, responses={202: WebhookDeliveryOutputSerializer})
    def post(self, request: Request, delivery_id: int) -> Response:
        delivery = selectors.webhook_delivery_get_for_user(
            user=request.user, delivery_id=delivery_id
        )
        replay = services.webhook_delivery_replay(delivery=delivery)
        replay.refresh_from_db()
        return Response(
            WebhookDeliveryOutputSerializer(replay).data, status=status.HTTP_202_ACCEPTED
        )
