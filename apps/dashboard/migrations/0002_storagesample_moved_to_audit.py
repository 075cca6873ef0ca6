from django.db import migrations


class Migration(migrations.Migration):
    """StorageSample now belongs to audit; its table stays (state change only)."""

    dependencies = [
        ("dashboard", "0001_storage_sample"),
        ("audit", "0004_storagesample"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="StorageSample")],
            database_operations=[],
        ),
    ]
