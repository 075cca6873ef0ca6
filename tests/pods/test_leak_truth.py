"""Unmeasured is not zero: the leak report says which leaks were never measured, and a fix
with nothing to do yet says why and from when (issue #23)."""

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from apps.pods import services
from apps.pods.models import DockerHost, OrphanVolume
from tests import parts

pytestmark = pytest.mark.django_db


def orphan_row(name: str, *, size: int | None, minutes_old: int) -> OrphanVolume:
    host = DockerHost.objects.get_or_create(name="local", defaults={"base_url": "unix:///var/run/docker.sock"})[0]
    return OrphanVolume.objects.create(
        host=host, docker_name=name, reason="no pod row", size_bytes=size,
        created_at=timezone.now() - timezone.timedelta(minutes=minutes_old),
    )  # fmt: skip


def test_leaks_never_measured_are_not_added_up_as_zero(staff_client, settings):
    for n in range(3):
        orphan_row(f"pinacle-vol-x{n}-workspace", size=None, minutes_old=120)
    for url in (reverse("dashboard:overview"), reverse("dashboard:leaks")):
        body = staff_client.get(url).text
        assert '<span class="big" id="leaked-bytes">not measured yet</span>' in body
        assert "held by 3 leaks" in body and 'id="leaked-bytes">0 B' not in body
    assert staff_client.get(reverse("dashboard:leaks")).text.count("not measured yet</span></td>") == 3
    orphan_row("pinacle-vol-y-workspace", size=4096, minutes_old=120)
    cache.clear()  # figures are kept until a change is recorded; this row was written directly
    body = staff_client.get(reverse("dashboard:leaks")).text
    assert 'id="leaked-bytes">4.0 KiB<' in body and "held by 4 leaks (3 of them not measured yet)" in body


def test_an_orphan_in_its_grace_period_says_when_the_sweep_takes_it(staff_client, settings):
    settings.POD_ORPHAN_GRACE_MINUTES = 60
    row = orphan_row("pinacle-vol-young-workspace", size=4096, minutes_old=10)
    until = row.created_at + timezone.timedelta(minutes=60)
    body = staff_client.get(reverse("dashboard:leaks")).text
    assert f"in its grace period, the sweep takes it from {until:%Y-%m-%d %H:%M} UTC" in body


@pytest.mark.docker
def test_a_sweep_with_nothing_to_do_yet_says_why_and_from_when(staff_client, own_dockerd, pods_settings):
    # Its own dockerd: the page names the first moment any orphan of the host may go, and on
    # the shared daemon another worker's older orphan would be that one.
    pods_settings.POD_ORPHAN_GRACE_MINUTES = 60
    name = f"pinacle-vol-{parts.pod_id('g')}-workspace"
    own_dockerd.client().volumes.create(name=name)
    services.pods_reconcile(actor="test")
    row = OrphanVolume.objects.get(docker_name=name)
    body = staff_client.get(reverse("pods:sweep")).text
    assert "These 0 volumes" not in body
    assert "Nothing to delete yet:" in body and "inside the 60-minute grace period" in body
    assert f"{row.created_at + timezone.timedelta(minutes=60):%Y-%m-%d %H:%M} UTC" in body


@pytest.mark.docker
def test_an_orphan_a_reconcile_finds_shows_in_the_leak_report_at_once(staff_client, docker_client, pods_settings):
    pods_settings.OVERVIEW_CACHE_SECONDS = 300
    name = f"pinacle-vol-{parts.pod_id('n')}-workspace"
    services.pods_reconcile(actor="test")
    assert name not in staff_client.get(reverse("dashboard:leaks")).text  # the figures are now kept
    docker_client.volumes.create(name=name)
    try:
        services.pods_reconcile(actor="test")
        assert f"orphaned volume {name}" in staff_client.get(reverse("dashboard:leaks")).text
    finally:
        docker_client.volumes.get(name).remove(force=True)
