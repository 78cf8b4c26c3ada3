"""createtoken: create what is missing (user, organization, membership) and print a token."""

from django.core.management.base import BaseCommand, CommandError

from apps.accounts.models import Organization, Role
from apps.accounts.services import membership_ensure, token_create
from apps.common.errors import ApplicationError
from apps.workforce.services import worker_ensure


class Command(BaseCommand):
    help = "Create user/organization/membership as needed and print a new API token last."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", required=True)
        parser.add_argument("--org", required=True, help="Organization name")
        parser.add_argument("--org-kind", required=True, choices=Organization.Kind.values)
        parser.add_argument("--role", required=True, choices=Role.values)

    def handle(self, *args, **options) -> None:
        try:
            membership = membership_ensure(
                username=options["username"],
                org_name=options["org"],
                org_kind=options["org_kind"],
                role=options["role"],
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if membership.role in (Role.ANNOTATOR, Role.EXPERT):
            worker_ensure(
                user=membership.user, tier="expert" if membership.role == Role.EXPERT else "crowd"
            )
        self.stderr.write(
            f"{membership.user.username} is {membership.role} at {membership.organization.name}"
        )
        self.stdout.write(token_create(user=membership.user))
