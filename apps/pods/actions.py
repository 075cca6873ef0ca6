"""The five things a person does to one pod, declared once.

Services (which status a pod passes through, what an interrupted action resumes as), the
operation kinds, the pages, the admin and the templates all read this table: a sixth
action, or a new label, is one row here.
"""

from dataclasses import dataclass

from apps.audit.names import AuditAction, Kind
from apps.pods.models import Pod
from controlpanel.errors import InvalidInput, PanelError


@dataclass(frozen=True)
class PodAction:
    kind: str
    busy: str  # the pod's status while the work is under way
    done: str  # and once it is done
    past: str  # "it cannot be stopped now"
    confirm_label: str  # the confirmation page's button
    admin_label: str  # the admin's action menu
    # The confirmation page's first line; `{pod_id}`, `{store}` and `{restore}` are filled in.
    summary: str
    # What happens to each of the pod's volumes ("" when they stay), and to its snapshots.
    volume_fate: str = ""
    purges_snapshots: bool = False
    # An interrupted run (its worker died) is queued again as the same action; provisioning
    # holds no user data and is rolled back instead.
    resumable: bool = True
    # Start deletes nothing: it confirms without a red button.
    destructive: bool = True
    # Offered on the pod's page and in the admin (provisioning has its own form).
    on_pod_page: bool = True

    @property
    def name(self) -> str:
        return self.kind.split(".", 1)[1]

    @property
    def audit_action(self) -> str:
        return AuditAction(self.kind)  # an action audits as its own kind

    @property
    def permission(self) -> str:
        # Pod.Meta.permissions; deleting uses Django's own `delete_pod` (it purges snapshots too).
        return f"pods.{self.name}_pod"

    def allowed(self, pod: Pod) -> bool:
        return pod.can_transition(self.busy)

    def refusal(self, pod: Pod) -> PanelError:
        return PanelError(f"pod {pod.pod_id!r} is {pod.status}; it cannot be {self.past} now")


PROVISION = PodAction(
    Kind.POD_PROVISION,
    busy=Pod.Status.PROVISIONING,
    done=Pod.Status.RUNNING,
    past="provisioned",
    confirm_label="Provision the pod",
    admin_label="Provision",
    summary="Pod {pod_id} will be provisioned again.",
    resumable=False,
    destructive=False,
    on_pod_page=False,
)
STOP = PodAction(
    Kind.POD_STOP,
    busy=Pod.Status.STOPPING,
    done=Pod.Status.STOPPED,
    past="stopped",
    confirm_label="Snapshot, then delete the volumes",
    admin_label="Stop (snapshot, verify, then remove volumes)",
    summary="Pod {pod_id} will be snapshotted to {store}; once every volume is verified there, its container and "
    "these eight volumes are deleted.",
    volume_fate="deleted after a verified snapshot",
)
START = PodAction(
    Kind.POD_START,
    busy=Pod.Status.STARTING,
    done=Pod.Status.RUNNING,
    past="started",
    confirm_label="Start the pod",
    admin_label="Start (reattach or restore)",
    summary="Pod {pod_id} will be started{restore}.",
    destructive=False,
)
DEPROVISION = PodAction(
    Kind.POD_DEPROVISION,
    busy=Pod.Status.DEPROVISIONING,
    done=Pod.Status.DEPROVISIONED,
    past="deprovisioned",
    confirm_label="Delete the container and volumes",
    admin_label="Deprovision (remove container and volumes)",
    summary="Pod {pod_id}'s container and these eight volumes will be deleted. Snapshots stay.",
    volume_fate="deleted; snapshots are kept",
)
DELETE = PodAction(
    Kind.POD_DELETE,
    busy=Pod.Status.DELETING,
    done=Pod.Status.DELETED,
    past="deleted",
    confirm_label="Delete the pod, its volumes and snapshots",
    admin_label="Delete (container, volumes and snapshots)",
    summary="Pod {pod_id}'s container, eight volumes and every snapshot will be deleted. This cannot be undone.",
    volume_fate="deleted",
    purges_snapshots=True,
)

POD_ACTIONS: dict[str, PodAction] = {action.name: action for action in (PROVISION, STOP, START, DEPROVISION, DELETE)}
# The actions a pod's page offers (each behind a confirmation page) and the admin runs.
PAGE_ACTIONS: list[PodAction] = [action for action in POD_ACTIONS.values() if action.on_pod_page]
# What a pod left mid-action by a dead worker resumes as, by the status it was left in.
RESUME_ACTIONS: dict[str, PodAction] = {action.busy: action for action in POD_ACTIONS.values() if action.resumable}


def pod_action(name: str) -> PodAction:
    action = POD_ACTIONS.get(name)
    if action is None:
        raise InvalidInput(f"unknown pod action {str(name)[:40]!r}")
    return action


def pod_action_allowed(pod: Pod, name: str) -> bool:
    return pod_action(name).allowed(pod)
