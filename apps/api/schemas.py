"""What the API answers, as the OpenAPI document shows it."""

from datetime import datetime
from enum import Enum
from typing import Any

from ninja import Schema

from apps.audit.holds import HOLDABLE
from apps.pods.actions import PAGE_ACTIONS

# Every action a pod's page offers is an API action: a new row in `apps/pods/actions.py`
# is a new value here, with no new route.
PodActionName = Enum("PodActionName", {action.name: action.name for action in PAGE_ACTIONS}, type=str)
HoldTarget = Enum("HoldTarget", {str(target): str(target) for target in sorted(HOLDABLE)}, type=str)


class Error(Schema):
    error: str


class Queued(Schema):
    operation: int


class Progress(Schema):
    done: int
    total: int | None
    unit: str
    percent: int | None


class OperationOut(Schema):
    id: int
    kind: str
    label: str
    target_type: str
    target_id: str
    actor: str
    status: str
    progress: Progress
    sentence: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any]


class PodSummary(Schema):
    pod_id: str
    status: str
    host: str
    volume_bytes: int | None
    last_snapshot_id: int | None
    last_snapshot_status: str | None
    last_snapshot_bytes: int | None
    last_snapshot_at: datetime | None


class HoldIn(Schema):
    target_type: HoldTarget
    target_id: str
    reason: str
    until: datetime | None = None


class HoldRef(Schema):
    target_type: HoldTarget
    target_id: str


class HoldOut(Schema):
    target_type: str
    target_id: str
    reason: str
    held_by: str
    created_at: datetime
    until: datetime | None
    released_at: datetime | None
    released_by: str
