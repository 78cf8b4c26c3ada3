"""Existing deployments: a vendor whose pools already work on a client's jobs gets an active
contract with that client, so that the tenancy rule (apps.accounts.models.VendorContract)
keeps the relations that exist and takes away only the access nobody had a reason for."""

from django.db import migrations


def forwards(apps, schema_editor):
    Pool = apps.get_model("workforce", "Pool")
    VendorContract = apps.get_model("accounts", "VendorContract")
    pairs = set(
        Pool.jobs.through.objects.values_list("pool__organization_id", "job__organization_id")
    )
    VendorContract.objects.bulk_create(
        [
            VendorContract(vendor_id=vendor_id, client_id=client_id, note="from open pools")
            for vendor_id, client_id in sorted(pairs)
            if vendor_id != client_id
        ],
        ignore_conflicts=True,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("workforce", "0002_lean_indexes"),
        ("accounts", "0002_vendor_contract"),
        ("jobs", "0002_lean_indexes"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
