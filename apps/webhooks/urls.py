from django.urls import path

from apps.webhooks import apis

urlpatterns = [
    path("webhooks/endpoints/", apis.WebhookEndpointListCreateApi.as_view(), name="webhook-list"),
    path(
        "webhooks/endpoints/<id:endpoint_id>/",
        apis.WebhookEndpointDetailApi.as_view(),
        name="webhook-detail",
    ),
    path(
        "webhooks/endpoints/<id:endpoint_id>/ping/",
        apis.WebhookEndpointPingApi.as_view(),
        name="webhook-ping",
    ),
    path("webhooks/deliveries/", apis.WebhookDeliveryListApi.as_view(), name="webhook-deliveries"),
    path(
        "webhooks/deliveries/<id:delivery_id>/",
        apis.WebhookDeliveryDetailApi.as_view(),
        name="webhook-delivery",
    ),
    path(
        "webhooks/deliveries/<id:delivery_id>/replay/",
        apis.WebhookDeliveryReplayApi.as_view(),
        name="webhook-replay",
    ),
]
