from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    label = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.core.signals import request_finished, request_started
        from django.db.models.signals import post_delete, post_save

        from apps.accounts.authentication import credentials_changed
        from apps.accounts.models import ApiToken, Membership
        from apps.common import caches
        from apps.common.views import HEALTH_FIGURES

        # One read of every per-process cache's version per request (apps.common.caches).
        request_started.connect(caches.request_started, dispatch_uid="cache-versions-start")
        request_finished.connect(caches.request_finished, dispatch_uid="cache-versions-end")
        # Whether this process hears invalidations pushed by the others (/healthz "process").
        HEALTH_FIGURES["cache_listener"] = caches.LISTENER.figures

        # Cached credentials (apps.common.caches) are invalidated in every process by any
        # change to what they are built from, wherever it is made (admin included).
        for model in (ApiToken, Membership, get_user_model()):
            post_save.connect(
                credentials_changed, sender=model, dispatch_uid=f"credentials-save-{model}"
            )
            post_delete.connect(
                credentials_changed, sender=model, dispatch_uid=f"credentials-del-{model}"
            )
