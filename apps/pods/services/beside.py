"""restic beside a pod's volumes: which copies are made there, the helper container that runs
restic on the pod's own Docker host with the store opened for it, and how a snapshot's
volumes are laid out (eight tar streams, or eight folders of one restic snapshot). The copy,
read-back and restore themselves are `capture_folders`."""

from pathlib import Path, PurePosixPath

from django.conf import settings

from apps.pods.docker_engine import DockerEngine
from apps.pods.models import PodVolume
from apps.pods.restic_helper import SECRETS, credentials_file, pod_helpers_remove, restic_in_helper
from apps.pods.services.state import _log
from apps.pods.stores import restic_working
from apps.pods.stores.dedup import DedupStore
from apps.pods.stores.restic_messages import refused_working
from apps.pods.stores.restic_stalls import STALL_RESTARTS
from controlpanel.errors import PanelError

# restic's exit status for a snapshot made without some files it could not read.
INCOMPLETE = 3


def folders_used(store) -> bool:
    """Whether copies into `store` are made beside the volumes."""
    return isinstance(store, DedupStore) and settings.SNAPSHOT_ENGINE == "beside"


def folders_precheck(*, store, engine: DockerEngine, always: bool = False) -> None:
    """A file repository can be bind-mounted only into a helper on this machine (`always`: a
    folder snapshot's restore, whatever SNAPSHOT_ENGINE says now)."""
    wanted = always or folders_used(store)
    if wanted and isinstance(store, DedupStore) and store.path is not None and not engine.on_this_machine:
        raise PanelError(
            f"snapshot store {store.url} is a folder on the panel's machine, which Docker host "
            f"{engine.host_name!r} cannot reach: use a dedup+s3:// store for pods on other hosts; nothing was touched"
        )


def folder_name(volume: PodVolume) -> str:
    return PurePosixPath(volume.mount_path).name


def helper_setup(store: DedupStore, engine: DockerEngine, *, working: bool = True) -> tuple[dict, dict, dict]:
    """(env, secrets, binds) for restic in a helper to open `store`."""
    folders_precheck(store=store, engine=engine, always=True)
    password, hint = store.password(working=working)
    secrets = {"key": password}
    env = {"RESTIC_PASSWORD_FILE": f"{SECRETS}/key", "RESTIC_CACHE_DIR": "/cache"}
    if hint:
        env["RESTIC_KEY_HINT"] = hint  # the working key's id, not a secret
    binds = {}
    if engine.on_this_machine:
        cache = Path(settings.VAR_DIR) / "restic-cache"
        cache.mkdir(parents=True, exist_ok=True)
        binds[str(cache)] = "/cache"
    if store.path is not None:
        binds[str(store.path)] = "/repo"
        env["RESTIC_REPOSITORY"] = "/repo"
    else:
        env["RESTIC_REPOSITORY"] = store.repository
        env["AWS_DEFAULT_REGION"] = settings.AWS_REGION
        credentials = credentials_file()
        if credentials is not None:
            secrets["aws"] = credentials
            env["AWS_SHARED_CREDENTIALS_FILE"] = f"{SECRETS}/aws"
    return env, secrets, binds


def helper_restic(store: DedupStore, engine: DockerEngine, *, owner: str, operation, command, volumes, doing, **run):
    """restic in a helper labelled with `owner`: a pod's id (the pod's own stop, backup or
    start: a helper of the pod still there is a dead worker's, and goes first), or a drill's."""
    left = pod_helpers_remove(engine, owner)
    if left:
        _log(operation, f"removed restic helpers a stopped worker left on pod {owner}: {', '.join(left)}")
    working, stalls = True, 0
    while True:
        env, secrets, binds = helper_setup(store, engine, working=working)
        result = restic_in_helper(
            engine,
            command=command,
            volumes=volumes,
            env=env,
            secrets=secrets,
            binds=binds,
            doing=doing,
            pod_id=owner,
            stop_stalls=stalls < STALL_RESTARTS,  # the last one waits a lock out, as restic would
            **run,
        )
        told = result.stderr or "\n".join(result.lines[-5:])
        if result.exit_code in (0, INCOMPLETE):
            return result
        if result.stalled:  # a lock went as restic read it: at once, with its own lock gone
            stalls += 1
            if hostname := engine.host_hostname():  # else left to age: never another host's
                store.own_lock_remove(result.pid, hostname=hostname)
            _log(operation, f"restic met a lock that went as it read it ({doing}): started again")
            continue
        if not (working and refused_working(env, told)):
            raise store.error(doing, told, hint=env.get("RESTIC_KEY_HINT"))
        restic_working.forget(store, env["RESTIC_KEY_HINT"])  # removed meanwhile: once more without it
        working = False


def folder_layout(manifest: dict | None) -> bool:
    """The snapshot's volumes are folders of one restic snapshot (made beside the volumes)."""
    entries = list((manifest or {}).values())
    return bool(entries) and all(isinstance(entry, dict) and entry.get("folder") for entry in entries)


def objects_to_read(manifest: dict) -> list[tuple[list[str], dict]]:
    """The distinct objects a manifest relies on, each with the volumes it holds: one per
    volume for a tar stream, one for the eight volumes kept as folders in one restic snapshot."""
    groups: dict[str, tuple[list[str], dict]] = {}
    for name, entry in manifest.items():
        group = entry["store_id"] if entry.get("folder") else entry["key"]
        groups.setdefault(group, ([], entry))[0].append(name)
    return list(groups.values())


def object_bytes(entry: dict) -> int:
    """What reading the entry's object back yields: its tar, or restic's tar of the snapshot."""
    return entry.get("archive_bytes", entry["bytes"])
