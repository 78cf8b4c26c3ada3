"""Store every job's policy, pricing and routing as apps.jobs.policy reads them: known keys
as their types ("3" -> 3), the escalation alias low_confidence -> low_posterior. Keys
nobody knows are kept (a client may send back what it read); the typed spec ignores them."""

from django.db import migrations

from apps.jobs.policy import Policy, Pricing, Routing, normalized


def normalize(apps, schema_editor):
    Job = apps.get_model("jobs", "Job")
    for job in Job.objects.only("id", "policy", "pricing", "routing").iterator(chunk_size=500):
        parts = {
            "policy": normalized(Policy, job.policy),
            "pricing": normalized(Pricing, job.pricing),
            "routing": normalized(Routing, job.routing),
        }
        changed = {name: value for name, value in parts.items() if value != getattr(job, name)}
        if changed:
            Job.objects.filter(pk=job.pk).update(**changed)


class Migration(migrations.Migration):
    dependencies = [("jobs", "0002_lean_indexes")]

    operations = [migrations.RunPython(normalize, migrations.RunPython.noop)]
