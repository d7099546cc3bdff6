"""Lanes for jobs and the target's allowance over time (issue 18).

Adding a column with a constant default is a catalogue change on PostgreSQL 11+: no table rewrite even at
millions of jobs. The claim's index follows in 0026, built CONCURRENTLY.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('crms', '0006_mock_query_locator'),
        ('sync', '0024_job_list_indexes'),
    ]

    operations = [
        migrations.AlterField(
            model_name="alert",
            name="kind",
            field=models.CharField(
                choices=[
                    ("lag", "Lag"),
                    ("failures", "Failures"),
                    ("breaker_open", "Breaker Open"),
                    ("allowance", "Allowance"),
                ],
                max_length=16,
            ),
        ),
        migrations.CreateModel(
            name='QuotaSample',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('key', models.CharField(help_text='The quota owner (sync.delivery.throttle.quota_key)', max_length=128)),
                ('at', models.DateTimeField()),
                ('used', models.PositiveBigIntegerField()),
                ('cap', models.PositiveBigIntegerField()),
                ('period_seconds', models.FloatField(help_text='How long until the allowance refills (for a rolling one, its length)')),
            ],
        ),
        migrations.AddField(
            model_name='syncjob',
            name='lane',
            field=models.PositiveSmallIntegerField(choices=[(0, 'live changes'), (1, 'reads and polls'), (2, 'backfill and reconcile')], default=0, help_text='Live changes are claimed and sent before backfill and reconcile work (docs/operations.md).'),
        ),
        migrations.AddField(
            model_name='quotasample',
            name='connection',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='crms.connection'),
        ),
        migrations.AddIndex(
            model_name='quotasample',
            index=models.Index(fields=['key', '-at'], name='quota_sample_key_idx'),
        ),
    ]
