"""`Authorization: Token <key>` authentication against hashed tokens."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions

from apps.accounts.models import ApiToken
from apps.accounts.services import token_digest


class HashedTokenAuthentication(authentication.TokenAuthentication):
    keyword = "Token"

    def authenticate_credentials(self, key: str):
        token = (
            ApiToken.objects.select_related("user")
            .filter(digest=token_digest(key), revoked_at__isnull=True)
            .first()
        )
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        # Touch last_used_at at most once a minute: a write per request would put the
        # token row on the hot path of every annotator.
        now = timezone.now()
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token
