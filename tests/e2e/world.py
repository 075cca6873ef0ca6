"""A small panel with real rows in every app, and the pages a person can reach in it.

Rows come the way the panel makes them: session folders and mix-job files on disk mirrored
by their syncs, a local volume inspected, pods as the reconcile would leave them (no Docker
call: the pages read the database), work that failed and work that succeeded."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

from django.urls import reverse

from apps.audit.models import StorageSample
from apps.audit.names import Kind, TargetType
from apps.audit.operations import run_now
from apps.audit.services import operation_create, operation_execute
from apps.pods.models import Pod, Snapshot
from controlpanel.errors import PanelError
from tests.mixjobs.helpers import write_job
from tests.scale import seed_pods
from tests.separations.helpers import put_session
from tests.volumes.helpers import LocalWorld, lay_out_results

LONG_POD_ID = "longrunningpod_" + "0123456789" * 11 + "abc"  # 128 characters, the most an id may have

# What reports whether anything on a page overflows the window sideways, and by how much.
OVERFLOW_JS = "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"

# Every live control on the page that would change something: a button of a POST form
# (logging out aside), anything styled as dangerous, and button-links named after a destructive
# action. Disabled buttons, and links that only preview, are not controls a role can use.
LIVE_CONTROLS_JS = r"""() => {
  const destructive = new RegExp(
    "^(stop|deprovision|delete|clean ?up|purge|remove|sweep|retry"
      + "|reconcile|sync|inspect|provision|start|cross-check)\\b",
    "i",
  );
  const seen = [];
  for (const form of document.querySelectorAll("form")) {
    if ((form.getAttribute("method") || "get").toLowerCase() !== "post") continue;
    if (form.classList.contains("logout")) continue;
    for (const control of form.querySelectorAll("button, input[type=submit]")) {
      if (control.disabled || control.type === "button") continue;
      seen.push("form button: " + (control.innerText || control.value).trim());
    }
  }
  for (const control of document.querySelectorAll(".danger")) {
    if (!control.disabled && !control.closest("form.logout")) seen.push("danger: " + control.innerText.trim());
  }
  for (const link of document.querySelectorAll("main a.button")) {
    if (destructive.test(link.innerText.trim())) seen.push("link: " + link.innerText.trim());
  }
  return [...new Set(seen)];
}"""


@dataclass
class World:
    pod_running: str
    pod_stopped: str
    session_id: str
    volume_name: str
    failed_operation_id: int
    succeeded_operation_id: int


def build_world(tmp_path) -> World:
    now = datetime.now(UTC)
    # Sessions: two past every policy's age, one fresh; mirrored by the sync.
    for index in range(2):
        put_session(f"stale-{index}", mtime=now - timedelta(hours=6 + index), input_bytes=40_000)
    put_session("fresh-session-with-a-rather-long-identifier-0123456789", mtime=now, input_bytes=40_000)
    run_now(Kind.SESSIONS_SYNC, actor="test")
    # Mix jobs: one complete and past its TTL (a leak), one still mixing, one failed.
    write_job("mix-s1", "job-expired", state="complete", updated_at=now - timedelta(hours=60))
    write_job("mix-s2", "job-mixing", state="mixing", updated_at=now - timedelta(minutes=5))
    write_job("mix-s3", "job-failed", state="error", updated_at=now - timedelta(hours=2))
    run_now(Kind.MIXJOBS_SYNC, actor="test")
    # A local volume, inspected.
    volume = LocalWorld(tmp_path / "ml-results", name="brain-go-brr-results")
    lay_out_results(volume)
    volume.volume(purpose="training results")
    run_now(Kind.VOLUME_INSPECT, volume.name, actor="test")
    # A day of samples with a peak, so charts draw both time labels and a size scale.
    StorageSample.objects.bulk_create(
        StorageSample(domain="pods", subject="all", total_bytes=size, sampled_at=now - timedelta(hours=hours))
        for hours, size in [(26, 120_000_000), (12, 1_023_900_000), (3, 630_000_000), (0, 30_000_000)]
    )
    # Pods: a running one, a stopped one with a snapshot, a paused and a deprovisioned one.
    seed_pods(4)
    running = Pod.objects.filter(status=Pod.Status.RUNNING).values_list("pod_id", flat=True).first()
    stopped = Pod.objects.filter(status=Pod.Status.STOPPED).values_list("pod_id", flat=True).first()
    # A running pod with the longest id there may be (no hyphen to break at), backed up 3 h ago:
    # the overview names it among the pods furthest behind their backup interval.
    long_running = Pod.objects.create(
        pod_id=LONG_POD_ID, host=Pod.objects.get(pod_id=running).host, image="pinacle-base:latest", status="running"
    )
    Snapshot.objects.create(
        pod=long_running,
        kind=Snapshot.Kind.BACKUP,
        store_url="file:///x",
        status=Snapshot.Status.COMPLETE,
        started_at=now - timedelta(hours=3, minutes=6),
        finished_at=now - timedelta(hours=3, minutes=5, seconds=10),
    )
    # Work that failed (a person may retry it) and work that went well.
    failed = operation_create(
        kind=Kind.SESSIONS_SYNC, target_type=TargetType.SESSION_VOLUME, target_id="music-split-jobs-data", actor="test"
    )

    def refuse(operation):
        raise PanelError("sessions volume unavailable: volume folder /data/sessions does not exist " + "x" * 200)

    operation_execute(operation_id=failed.pk, work=refuse)
    succeeded = run_now(Kind.MIXJOBS_SYNC, actor="test")
    return World(
        pod_running=running,
        pod_stopped=stopped,
        session_id="stale-0",
        volume_name=volume.name,
        failed_operation_id=failed.pk,
        succeeded_operation_id=succeeded.pk,
    )


def page_urls(world: World) -> dict[str, str]:
    """Every page of the panel (the Django admin aside), by a short name."""
    return {
        "overview": reverse("dashboard:overview"),
        "leaks": reverse("dashboard:leaks"),
        "tasks": reverse("dashboard:operations"),
        "tasks-routine": reverse("dashboard:operations") + "?routine=1",
        "operation-failed": reverse("dashboard:operation", args=[world.failed_operation_id]),
        "operation-succeeded": reverse("dashboard:operation", args=[world.succeeded_operation_id]),
        "audit": reverse("dashboard:audit"),
        "pods": reverse("pods:list"),
        "pod-running": reverse("pods:detail", args=[world.pod_running]),
        "pod-stopped": reverse("pods:detail", args=[world.pod_stopped]),
        "pod-stop-confirm": reverse("pods:confirm", args=[world.pod_running, "stop"]),
        "pods-sweep": reverse("pods:sweep"),
        "pods-retention": reverse("pods:retention"),
        "sessions": reverse("separations:list"),
        "session": reverse("separations:detail", args=[world.session_id]),
        "sessions-cleanup": reverse("separations:cleanup", args=["manual"]) + f"?session={world.session_id}",
        "mixjobs": reverse("mixjobs:list"),
        "mixjobs-cleanup": reverse("mixjobs:cleanup"),
        "volumes": reverse("volumes:list"),
        "volume": reverse("volumes:detail", args=[world.volume_name]),
        "not-found": "/no-such-page/",
    }


def same_site_links(page, base_url: str) -> list[str]:
    """The panel's own pages linked from `page` (the admin, static files and logging out aside)."""
    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    links = []
    for href in hrefs:
        url = urlparse(href)
        if f"{url.scheme}://{url.netloc}" != base_url or url.path.startswith(("/admin/", "/static/", "/logout")):
            continue
        links.append(url.path + (f"?{url.query}" if url.query else ""))
    return links
