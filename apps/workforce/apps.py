from django.apps import AppConfig


class WorkforceConfig(AppConfig):
    name = "apps.workforce"
    label = "workforce"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from apps.accounts.authentication import credentials_changed
        from apps.workforce.models import Worker

        # A worker's tier and status travel with the cached credentials: any change to the
        # row (services and admin alike) invalidates them in every process.
        post_save.connect(credentials_changed, sender=Worker, dispatch_uid="credentials-worker")
        post_delete.connect(
            credentials_changed, sender=Worker, dispatch_uid="credentials-worker-del"
        )
