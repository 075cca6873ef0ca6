"""Tasks: routine schedule successes hidden unless asked for; filters by kind, target,
actor and status; a whole error one click away."""

import pytest
from django.urls import reverse

from apps.audit.names import Kind, TargetType
from apps.audit.operations import kind_get
from apps.audit.services import operation_create, operation_execute
from controlpanel.errors import PanelError

pytestmark = pytest.mark.django_db


def finished(kind, target_id, *, actor, error: str = ""):
    kind_row = kind_get(kind)
    operation = operation_create(kind=kind, target_type=kind_row.target_type, target_id=target_id, actor=actor)

    def work(op):
        if error:
            raise PanelError(error)
        return {"summary": f"done {target_id}"}

    return operation_execute(operation_id=operation.pk, work=work)


def rows(client, **query) -> list[int]:
    page = client.get(reverse("dashboard:operations"), query).context["page"]
    return [operation.pk for operation in page]


@pytest.fixture
def tasks():
    schedule = kind_get(Kind.SESSIONS_SYNC).schedule.actor
    return {
        "routine": finished(Kind.SESSIONS_SYNC, "vol-a", actor=schedule),
        "routine_failed": finished(Kind.SESSIONS_SYNC, "vol-b", actor=schedule, error="volume gone"),
        "by_person": finished(Kind.MIXJOBS_SYNC, "all", actor="alice"),
        "cli": finished(Kind.VOLUME_INSPECT, "brain-results", actor="cli", error="x" * 300 + " the end"),
    }


def test_routine_schedule_successes_are_hidden_until_asked_for(staff_client, tasks):
    shown = rows(staff_client)
    assert tasks["routine"].pk not in shown
    assert {tasks["routine_failed"].pk, tasks["by_person"].pk, tasks["cli"].pk} <= set(shown)
    assert tasks["routine"].pk in rows(staff_client, routine="1")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"kind": Kind.VOLUME_INSPECT}, ["cli"]),
        ({"target": "BRAIN"}, ["cli"]),
        ({"actor": "ali"}, ["by_person"]),
        ({"status": "failed"}, ["routine_failed", "cli"]),
        ({"status": "succeeded", "routine": "1"}, ["routine", "by_person"]),
        ({"kind": Kind.SESSIONS_SYNC, "status": "succeeded"}, []),
    ],
)
def test_tasks_filter_by_kind_target_actor_and_status(staff_client, tasks, query, expected):
    assert sorted(rows(staff_client, **query)) == sorted(tasks[name].pk for name in expected)


def test_the_kind_filter_lists_every_declared_kind_by_its_label(staff_client):
    text = staff_client.get(reverse("dashboard:operations")).text
    assert f'<option value="{Kind.SESSIONS_SYNC}"' in text and "Sync separation sessions</option>" in text


def test_a_whole_error_is_one_click_away(staff_client, tasks):
    text = staff_client.get(reverse("dashboard:operations")).text
    summary, whole = text.split('<details class="whole-error"><summary class="error">', 1)[1].split("</summary>", 1)
    # The newest failure first: the CLI's long error, cut in the summary, whole below it.
    assert summary.endswith("…") and "the end" not in summary
    assert ("x" * 300 + " the end") in whole.split("</details>")[0]


def test_a_target_filter_for_nothing_says_so(staff_client, tasks):
    response = staff_client.get(reverse("dashboard:operations"), {"target": "no-such-target"})
    assert "No operations match." in response.text
    assert response.context["filters"]["target"] == "no-such-target"
    assert TargetType.VOLUME  # the filter matches target ids of every type
