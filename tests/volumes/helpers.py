"""Trees laid out like the ML team's volumes, on a local folder or on the Modal fake.

A `World` writes files where the backend will read them and registers a Volume row
pointing at it, so the tests drive the same code the pages and the CLI use."""

import uuid
from pathlib import Path

from apps.audit.names import Kind
from apps.audit.operations import run_now
from apps.volumes.models import CrossCheck, Inspection, Volume

TRAIN, DEV = 4667, 1832
RESULT_FOLDERS = ("smoke", "train", "checkpoints", "tensorboard", "wandb")


class LocalWorld:
    kind = "local"

    def __init__(self, root: Path, name: str = "brain-go-brr-results"):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.url = f"local://{root}"
        self._made: set[Path] = set()

    def put(self, path: str, size: int) -> None:
        target = self.root / path
        if target.parent not in self._made:  # thousands of files share a few folders
            target.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(target.parent)
        with open(target, "wb") as out:
            out.write(b"x" * size)

    def mkdir(self, path: str) -> None:
        (self.root / path).mkdir(parents=True, exist_ok=True)

    def volume(self, **fields) -> Volume:
        return Volume.objects.create(name=self.name, url=self.url, **fields)


class ModalWorld:
    kind = "modal"

    def __init__(self, server, name: str = "brain-go-brr-results"):
        self.server = server
        # A unique Modal name per test: the servicer is shared by the session.
        self.modal_name = f"{name}-{uuid.uuid4().hex[:8]}"
        server.create_volume(self.modal_name)
        self.name = name
        self.url = f"modal://{self.modal_name}?environment=main"

    def put(self, path: str, size: int) -> None:
        self.server.put_file(self.modal_name, path, size=size)

    def mkdir(self, path: str) -> None:
        self.server.put_dir(self.modal_name, path)

    def volume(self, **fields) -> Volume:
        return Volume.objects.create(name=self.name, url=self.url, **fields)


def lay_out_results(world) -> int:
    """The training outputs both plans keep on the volume; returns their bytes."""
    total = 0
    for i, folder in enumerate(RESULT_FOLDERS):
        world.put(f"{folder}/run-1/metrics.json", 100 + i)
        total += 100 + i
    world.put("checkpoints/run-1/model.pt", 5000)
    return total + 5000


def lay_out_s3_mount_plan(world) -> None:
    """Results only: the cache is read from S3 mounted at /cache."""
    lay_out_results(world)


def lay_out_volume_cache_plan(world, *, train: int = TRAIN, dev: int = DEV) -> None:
    """Results plus cache/tusz/{train,dev}/*.npz with manifest.json and _dataset_index.json."""
    lay_out_results(world)
    for i in range(train):
        world.put(f"cache/tusz/train/{i:05d}.npz", 3)
    for i in range(dev):
        world.put(f"cache/tusz/dev/{i:05d}.npz", 2)
    world.put("cache/tusz/manifest.json", 10)
    world.put("cache/tusz/_dataset_index.json", 20)


def inspect_now(volume: Volume, *, actor: str = "test") -> Inspection:
    """The CLI's path: one inspection operation run inline; its stored inspection."""
    operation = run_now(Kind.VOLUME_INSPECT, volume.name, actor=actor)
    return Inspection.objects.get(pk=operation.result["inspection_id"])


def crosscheck_now(volume: Volume, *, folder: str, s3_url: str, actor: str = "test") -> CrossCheck:
    """The CLI's path: one cross-check operation run inline; its stored result."""
    operation = run_now(Kind.VOLUME_CROSSCHECK, volume.name, actor=actor, folder=folder, s3_url=s3_url)
    return CrossCheck.objects.get(pk=operation.result["crosscheck_id"])
