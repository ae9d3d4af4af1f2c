"""The roles every deployment has (support staff, clinic admin, clinic staff) as auth groups.

Placeholder: the groups and their permissions are filled in by the roles work of issue 13.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("patients", "0006_audit_trail"),
        ("workflows", "0004_requeue_stamps"),
        ("integrations", "0003_throttle"),
    ]

    operations: list[migrations.operations.base.Operation] = []
