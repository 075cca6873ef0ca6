"""What a pod's eight volumes hold, and how many of those bytes a fault lost: one measure
for every reliability test, so the report's "bytes lost" means the same thing everywhere."""

from apps.pods.models import VOLUME_MOUNTS
from tests.pods.conftest import run_in


def digests(lines: list[str]) -> dict[str, str]:
    """path → md5 of every file, from `listing`'s md5sum lines."""
    return {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in lines if "|" not in line and "  " in line}


def file_sizes(docker_client, pod_id: str) -> dict[str, int]:
    output = run_in(
        docker_client, pod_id, f"find {' '.join(VOLUME_MOUNTS.values())} -type f -exec stat -c '%s|%n' {{}} +"
    )
    return {path: int(size) for size, path in (line.split("|", 1) for line in output.splitlines())}


def lost_bytes(sizes: dict[str, int], before: dict[str, str], *afterwards: dict[str, str] | None) -> int:
    """Bytes of the files in `before` that some later look did not find with the same md5
    (a look that could not be taken, None, finds nothing)."""
    return sum(
        sizes.get(path, 0) for path, md5 in before.items() if any((seen or {}).get(path) != md5 for seen in afterwards)
    )
