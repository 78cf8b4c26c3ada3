"""Organizations (tenants), memberships with roles, vendor contracts and hashed API tokens."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


class Organization(models.Model):
    class Kind(models.TextChoices):
        CLIENT = "client", "Client"
        VENDOR = "vendor", "Vendor"

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, help_text="Client or vendor.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind__in=["client", "vendor"]), name="organization_kind_valid"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class Role(models.TextChoices):
    CLIENT = "client", "Client"
    OPS = "ops", "Operations"
    ANNOTATOR = "annotator", "Annotator"
    EXPERT = "expert", "Expert"
    QC = "qc", "Quality control"


# Which organization kind each role belongs to: clients work for client organizations,
# everyone else for the vendor that runs the deployment.
ROLE_ORG_KIND = {
    Role.CLIENT: Organization.Kind.CLIENT,
    Role.OPS: Organization.Kind.VENDOR,
    Role.ANNOTATOR: Organization.Kind.VENDOR,
    Role.EXPERT: Organization.Kind.VENDOR,
    Role.QC: Organization.Kind.VENDOR,
}


class Membership(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "organization", "role"], name="membership_unique_role"
            ),
            models.CheckConstraint(
                condition=models.Q(role__in=[r.value for r in Role]), name="membership_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.role} @ {self.organization.name}"


class VendorContract(models.Model):
    """A vendor serving a client: the tenancy rule between organizations.

    While the contract is active, the vendor's staff (ops and QC) may see and act on every
    job of the client, and ops may open those jobs to the vendor's pools. Without one, the
    client's jobs do not exist for the vendor (404), except jobs that are still open to one
    of the vendor's pools (see `apps.jobs.selectors.job_list_for_user`).
    """

    client = models.ForeignKey(
        Organization,
        on_delete=models.CASCADE,
        related_name="vendor_contracts",
        limit_choices_to={"kind": Organization.Kind.CLIENT},
        help_text="The client organization whose jobs the vendor serves.",
    )
    vendor = models.ForeignKey(
        Organization,
        on_delete=models.CASCADE,
        related_name="client_contracts",
        limit_choices_to={"kind": Organization.Kind.VENDOR},
        help_text="The vendor organization whose ops and QC serve the client.",
    )
    active = models.BooleanField(
        default=True,
        help_text="Only an active contract gives the vendor's staff access to the client's jobs.",
    )
    note = models.CharField(
        max_length=500, blank=True, default="", help_text="Reference or terms, for people."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["client_id", "vendor_id"]
        indexes = [models.Index(fields=["vendor", "active"], name="contract_vendor_active_idx")]
        constraints = [
            models.UniqueConstraint(fields=["client", "vendor"], name="contract_unique_pair"),
            models.CheckConstraint(
                condition=~models.Q(client=models.F("vendor")), name="contract_two_organizations"
            ),
        ]

    def __str__(self) -> str:
        state = "active" if self.active else "inactive"
        return f"{self.vendor.name} serves {self.client.name} ({state})"

    def clean(self) -> None:
        # The kinds live on another table, so the database cannot check them; forms can.
        errors = {}
        if self.client_id and self.client.kind != Organization.Kind.CLIENT:
            errors["client"] = "Must be a client organization."
        if self.vendor_id and self.vendor.kind != Organization.Kind.VENDOR:
            errors["vendor"] = "Must be a vendor organization."
        if errors:
            raise ValidationError(errors)


class ApiToken(models.Model):
    """An API token; only its SHA-256 digest is stored, the key is shown once at creation."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(
        max_length=8, help_text="First characters of the key, to tell tokens apart."
    )
    digest = models.CharField(
        max_length=64, unique=True, help_text="SHA-256 hex digest of the key."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "revoked_at"])]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"
