import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    """StorageSample moves from the dashboard to audit (below the domain apps); the table
    stays where it is, so this changes Django's state only."""

    dependencies = [
        ("audit", "0003_auditevent_audit_newest_first"),
        ("dashboard", "0001_storage_sample"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="StorageSample",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("domain", models.CharField(max_length=40)),
                        ("subject", models.CharField(max_length=255)),
                        ("total_bytes", models.BigIntegerField()),
                        ("total_files", models.BigIntegerField(blank=True, null=True)),
                        ("sampled_at", models.DateTimeField(default=django.utils.timezone.now)),
                    ],
                    options={
                        "db_table": "dashboard_storagesample",
                        "ordering": ["-sampled_at", "-id"],
                        "indexes": [
                            models.Index(fields=["domain", "subject", "-sampled_at"], name="dashboard_s_domain_06b458_idx")
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
