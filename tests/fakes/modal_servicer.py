"""A local Modal control plane for tests: the real `modal` SDK talks gRPC to it.

It implements, over an in-memory tree per volume, the volume calls the SDK makes for
`Volume.from_name`, `listdir`/`iterdir`, `remove_file`, `read_file`, `commit` and `reload`;
every other call answers UNIMPLEMENTED, so a backend that starts using a new call fails
loudly instead of passing against a fake that pretends. Every call is recorded.

    server = FakeModalServer()
    server.start()                       # grpclib on 127.0.0.1:<random port>, own thread
    server.create_volume("music-split-jobs-data")
    server.put_file("music-split-jobs-data", "sessions/abc/input.wav", size=1000, mtime=...)
    # MODAL_SERVER_URL=server.url, MODAL_TOKEN_ID/SECRET=anything
    server.commits("music-split-jobs-data")   # -> number of VolumeCommit calls
    server.stop()

`read_file` downloads blocks over HTTP in the real service; the fake serves them from a
small aiohttp app on a second port of the same loop.
"""

import abc
import asyncio
import itertools
import posixpath
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import web
from google.protobuf import empty_pb2
from grpclib import GRPCError
from grpclib.const import Status
from grpclib.server import Server
from modal_proto import api_pb2
from modal_proto.api_grpc import ModalClientBase

DEFAULT_ENVIRONMENT = "main"
BLOCK_SIZE = 8 * 1024 * 1024  # modal._utils.blob_utils.BLOCK_SIZE
LIST_BATCH = 100  # entries per streamed VolumeListFiles2 message, like the real service


@dataclass
class FakeNode:
    type: int  # api_pb2.FileEntry.FileType
    size: int = 0
    mtime: int = 0
    content: bytes | None = None  # None: `size` zero bytes (tests declare big files cheaply)
    target: str = ""  # symlinks only


@dataclass
class FakeVolume:
    name: str
    environment: str
    volume_id: str
    version: int
    created_at: float
    nodes: dict[str, FakeNode] = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    method: str
    volume: str  # the volume name, or "" for calls not about one volume
    path: str = ""
    recursive: bool = False
    metadata: tuple = ()


def _clean(path: str) -> str:
    return posixpath.normpath("/" + (path or "")).lstrip("/") if path not in ("", "/") else ""


def _epoch(mtime: datetime | float | int | None) -> int:
    if mtime is None:
        return int(time.time())
    if isinstance(mtime, datetime):
        return int(mtime.timestamp())
    return int(mtime)


class FakeModalServicer(ModalClientBase):
    """The gRPC handlers. State lives on the FakeModalServer that owns this servicer."""

    def __init__(self, owner: "FakeModalServer"):
        self.owner = owner

    # -- helpers -------------------------------------------------------------------------

    def _record(self, stream, method: str, volume: FakeVolume | None = None, **fields) -> None:
        metadata = tuple(sorted((k, v) for k, v in (stream.metadata or {}).items() if k.startswith("x-modal-token")))
        self.owner._calls.append(Call(method=method, volume=volume.name if volume else "", metadata=metadata, **fields))
        fault = self.owner._faults.pop(method, None)
        if fault is not None:
            raise GRPCError(fault[0], fault[1])

    def _authenticate(self, stream) -> None:
        metadata = stream.metadata or {}
        if metadata.get("x-modal-client-type") == str(api_pb2.CLIENT_TYPE_CONTAINER):
            return  # containers authenticate with their task identity, not a token
        if not metadata.get("x-modal-token-id") or not metadata.get("x-modal-token-secret"):
            raise GRPCError(Status.UNAUTHENTICATED, "Token missing. Could not authenticate client.")

    def _volume(self, volume_id: str) -> FakeVolume:
        for volume in self.owner._volumes.values():
            if volume.volume_id == volume_id:
                return volume
        raise GRPCError(Status.NOT_FOUND, f"Volume {volume_id} not found")

    async def _start(self, stream, method: str):
        self._authenticate(stream)
        return await stream.recv_message()

    # -- client --------------------------------------------------------------------------

    async def ClientHello(self, stream) -> None:
        await self._start(stream, "ClientHello")
        self._record(stream, "ClientHello")
        await stream.send_message(api_pb2.ClientHelloResponse())

    # -- volumes -------------------------------------------------------------------------

    async def VolumeGetOrCreate(self, stream) -> None:
        request = await self._start(stream, "VolumeGetOrCreate")
        environment = request.environment_name or DEFAULT_ENVIRONMENT
        key = (environment, request.deployment_name)
        self._record(stream, "VolumeGetOrCreate", path=request.deployment_name)
        volume = self.owner._volumes.get(key)
        if volume is None:
            if request.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                raise GRPCError(
                    Status.NOT_FOUND, f"Volume '{request.deployment_name}' not found in environment '{environment}'"
                )
            volume = self.owner.create_volume(request.deployment_name, environment=environment)
        metadata = self.owner.metadata(volume)
        await stream.send_message(
            api_pb2.VolumeGetOrCreateResponse(volume_id=volume.volume_id, version=metadata.version, metadata=metadata)
        )

    async def VolumeList(self, stream) -> None:
        request = await self._start(stream, "VolumeList")
        environment = request.environment_name or DEFAULT_ENVIRONMENT
        self._record(stream, "VolumeList")
        before = request.pagination.created_before or float("inf")
        limit = request.pagination.max_objects or 100
        # Newest first, paged by creation time, as the SDK's pagination expects.
        volumes = sorted(
            (v for (env, _), v in self.owner._volumes.items() if env == environment and v.created_at < before),
            key=lambda v: v.created_at,
            reverse=True,
        )[:limit]
        items = [
            api_pb2.VolumeListItem(
                label=v.name, volume_id=v.volume_id, created_at=v.created_at, metadata=self.owner.metadata(v)
            )
            for v in volumes
        ]
        await stream.send_message(api_pb2.VolumeListResponse(items=items, environment_name=environment))

    async def _list_files(self, stream, method: str, response_type) -> None:
        request = await self._start(stream, method)
        volume = self._volume(request.volume_id)
        path = _clean(request.path)
        self._record(stream, method, volume, path=path, recursive=request.recursive)
        entries = self.owner.list_entries(volume, path, recursive=request.recursive)
        if entries is None:
            raise GRPCError(Status.NOT_FOUND, f"No such file or directory: {request.path}")
        for start in range(0, len(entries), LIST_BATCH):
            await stream.send_message(response_type(entries=entries[start : start + LIST_BATCH]))

    async def VolumeListFiles(self, stream) -> None:
        await self._list_files(stream, "VolumeListFiles", api_pb2.VolumeListFilesResponse)

    async def VolumeListFiles2(self, stream) -> None:
        await self._list_files(stream, "VolumeListFiles2", api_pb2.VolumeListFiles2Response)

    async def _remove_file(self, stream, method: str) -> None:
        request = await self._start(stream, method)
        volume = self._volume(request.volume_id)
        path = _clean(request.path)
        self._record(stream, method, volume, path=path, recursive=request.recursive)
        if not path:
            raise GRPCError(Status.INVALID_ARGUMENT, "cannot remove the volume root")
        node = volume.nodes.get(path)
        if node is None:
            raise GRPCError(Status.NOT_FOUND, f"No such file or directory: {request.path}")
        below = [p for p in volume.nodes if p.startswith(path + "/")]
        if node.type == api_pb2.FileEntry.FileType.DIRECTORY and below and not request.recursive:
            raise GRPCError(Status.INVALID_ARGUMENT, f"{request.path} is a non-empty directory; use recursive")
        for p in [path, *below]:
            del volume.nodes[p]
        await stream.send_message(empty_pb2.Empty())

    async def VolumeRemoveFile(self, stream) -> None:
        await self._remove_file(stream, "VolumeRemoveFile")

    async def VolumeRemoveFile2(self, stream) -> None:
        await self._remove_file(stream, "VolumeRemoveFile2")

    async def VolumeGetFile2(self, stream) -> None:
        request = await self._start(stream, "VolumeGetFile2")
        volume = self._volume(request.volume_id)
        path = _clean(request.path)
        self._record(stream, "VolumeGetFile2", volume, path=path)
        node = volume.nodes.get(path)
        if node is None or node.type != api_pb2.FileEntry.FileType.FILE:
            raise GRPCError(Status.NOT_FOUND, f"No such file: {request.path}")
        start = min(request.start, node.size)
        length = node.size - start if not request.len else min(request.len, node.size - start)
        first, last = start // BLOCK_SIZE, (start + length - 1) // BLOCK_SIZE if length else start // BLOCK_SIZE - 1
        urls = [
            f"{self.owner.http_url}/blocks/{volume.volume_id}/{index}/{start}/{length}?path={path}"
            for index in range(first, last + 1)
        ]
        await stream.send_message(
            api_pb2.VolumeGetFile2Response(get_urls=urls, size=node.size, start=start, len=length)
        )

    async def VolumeCommit(self, stream) -> None:
        request = await self._start(stream, "VolumeCommit")
        volume = self._volume(request.volume_id)
        self._record(stream, "VolumeCommit", volume)
        await stream.send_message(api_pb2.VolumeCommitResponse(skip_reload=False))

    async def VolumeReload(self, stream) -> None:
        request = await self._start(stream, "VolumeReload")
        volume = self._volume(request.volume_id)
        self._record(stream, "VolumeReload", volume)
        await stream.send_message(empty_pb2.Empty())

    async def VolumeHeartbeat(self, stream) -> None:
        request = await self._start(stream, "VolumeHeartbeat")
        volume = self._volume(request.volume_id)
        self._record(stream, "VolumeHeartbeat", volume)
        await stream.send_message(empty_pb2.Empty())


def _unimplemented(name: str):
    async def handler(self, stream) -> None:
        self.owner._calls.append(Call(method=name, volume=""))
        raise GRPCError(Status.UNIMPLEMENTED, f"{name} is not implemented by the local Modal servicer")

    handler.__name__ = name
    return handler


for _name in ModalClientBase.__abstractmethods__:
    if _name not in FakeModalServicer.__dict__:
        setattr(FakeModalServicer, _name, _unimplemented(_name))
abc.update_abstractmethods(FakeModalServicer)


class _ClosingServer(Server):
    """grpclib's Server keeps open connections alive on close(); an outage must drop them."""

    def __init__(self, handlers):
        super().__init__(handlers)
        self.transports = []

    def _protocol_factory(self):
        protocol = super()._protocol_factory()
        connection_made = protocol.connection_made

        def remember(transport):
            self.transports.append(transport)
            connection_made(transport)

        protocol.connection_made = remember
        return protocol

    def drop_connections(self) -> None:
        for transport in self.transports:
            transport.abort()
        self.transports.clear()


class FakeModalServer:
    """The servicer plus its state, served on 127.0.0.1 from a daemon thread."""

    _ids = itertools.count(1)

    def __init__(self):
        self._volumes: dict[tuple[str, str], FakeVolume] = {}
        self._created_base = time.time() - 3600
        self._calls: list[Call] = []
        self._faults: dict[str, tuple[Status, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._grpc: Server | None = None
        self._http: web.AppRunner | None = None
        self.port = 0
        self.http_port = 0

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> "FakeModalServer":
        """Serve (again, on the same ports after a `stop()`) and return once listening."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="fake-modal", daemon=True)
            self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    async def _serve(self) -> None:
        self._grpc = _ClosingServer([FakeModalServicer(self)])
        await self._grpc.start("127.0.0.1", self.port or 0)
        self.port = self._grpc._server.sockets[0].getsockname()[1]
        app = web.Application()
        app.router.add_get("/blocks/{volume_id}/{index}/{start}/{length}", self._block)
        self._http = web.AppRunner(app)
        await self._http.setup()
        site = web.TCPSite(self._http, "127.0.0.1", self.http_port or 0)
        await site.start()
        self.http_port = site._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Stop listening (an outage); state is kept, `start()` serves it again."""
        if self._loop is None or self._grpc is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)

    async def _shutdown(self) -> None:
        self._grpc.close()
        self._grpc.drop_connections()
        await self._grpc.wait_closed()
        self._grpc = None
        if self._http is not None:
            await self._http.cleanup()
            self._http = None

    def close(self) -> None:
        self.stop()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop = None

    async def _block(self, request: web.Request) -> web.Response:
        volume = next((v for v in self._volumes.values() if v.volume_id == request.match_info["volume_id"]), None)
        node = volume.nodes.get(request.query.get("path", "")) if volume else None
        if node is None:
            return web.Response(status=404, text="no such block")
        index, start, length = (int(request.match_info[k]) for k in ("index", "start", "length"))
        lo = max(start, index * BLOCK_SIZE)
        hi = min(start + length, (index + 1) * BLOCK_SIZE)
        # Like the real service, trailing zero bytes may be left out; the SDK pads them back.
        return web.Response(body=(node.content or b"")[lo:hi])

    # -- state for tests ------------------------------------------------------------------

    def reset(self) -> None:
        self._volumes.clear()
        self._calls.clear()
        self._faults.clear()

    def create_volume(self, name: str, *, environment: str = DEFAULT_ENVIRONMENT, version: int = 2) -> FakeVolume:
        key = (environment, name)
        if key not in self._volumes:
            self._volumes[key] = FakeVolume(
                name=name,
                environment=environment,
                volume_id=f"vo-fake{next(self._ids):06d}",
                version=version,
                # Strictly increasing and in the past (the SDK pages back from "now"), so
                # pagination by creation time never skips or repeats.
                created_at=self._created_base + next(self._ids) / 1000,
            )
        return self._volumes[key]

    def metadata(self, volume: FakeVolume) -> api_pb2.VolumeMetadata:
        version = api_pb2.VOLUME_FS_VERSION_V1 if volume.version == 1 else api_pb2.VOLUME_FS_VERSION_V2
        return api_pb2.VolumeMetadata(
            name=volume.name,
            version=version,
            creation_info=api_pb2.CreationInfo(created_at=volume.created_at, created_by="fake"),
        )

    def volume(self, name: str, *, environment: str = DEFAULT_ENVIRONMENT) -> FakeVolume:
        return self._volumes[(environment, name)]

    def _parents(self, volume: FakeVolume, path: str, mtime: int) -> None:
        parent = posixpath.dirname(path)
        while parent:
            volume.nodes.setdefault(parent, FakeNode(type=api_pb2.FileEntry.FileType.DIRECTORY, mtime=mtime))
            parent = posixpath.dirname(parent)

    def put_file(
        self,
        volume: str,
        path: str,
        *,
        size: int | None = None,
        content: bytes | None = None,
        mtime: datetime | float | None = None,
        environment: str = DEFAULT_ENVIRONMENT,
    ) -> None:
        """Add a file; give `content`, or only `size` for a big file without the bytes."""
        target = self.create_volume(volume, environment=environment)
        clean, when = _clean(path), _epoch(mtime)
        self._parents(target, clean, when)
        size = len(content) if content is not None and size is None else (size or 0)
        target.nodes[clean] = FakeNode(type=api_pb2.FileEntry.FileType.FILE, size=size, mtime=when, content=content)

    def put_dir(self, volume: str, path: str, *, mtime=None, environment: str = DEFAULT_ENVIRONMENT) -> None:
        target = self.create_volume(volume, environment=environment)
        clean, when = _clean(path), _epoch(mtime)
        self._parents(target, clean, when)
        target.nodes[clean] = FakeNode(type=api_pb2.FileEntry.FileType.DIRECTORY, mtime=when)

    def put_symlink(self, volume: str, path: str, target: str, *, mtime=None, environment=DEFAULT_ENVIRONMENT) -> None:
        holder = self.create_volume(volume, environment=environment)
        clean, when = _clean(path), _epoch(mtime)
        self._parents(holder, clean, when)
        holder.nodes[clean] = FakeNode(
            type=api_pb2.FileEntry.FileType.SYMLINK, size=len(target), mtime=when, target=target
        )

    def paths(self, volume: str, *, environment: str = DEFAULT_ENVIRONMENT) -> list[str]:
        return sorted(self.volume(volume, environment=environment).nodes)

    def list_entries(self, volume: FakeVolume, path: str, *, recursive: bool) -> list[api_pb2.FileEntry] | None:
        def entry(p: str, node: FakeNode) -> api_pb2.FileEntry:
            return api_pb2.FileEntry(path=p, type=node.type, mtime=node.mtime, size=node.size)

        if path:
            node = volume.nodes.get(path)
            if node is None:
                return None
            if node.type != api_pb2.FileEntry.FileType.DIRECTORY:
                return [entry(path, node)]
        prefix = path + "/" if path else ""
        found = []
        for p in sorted(volume.nodes):
            if not p.startswith(prefix):
                continue
            if not recursive and "/" in p[len(prefix) :]:
                continue
            found.append(entry(p, volume.nodes[p]))
        return found

    def fail_next(self, method: str, status: Status = Status.INTERNAL, message: str = "injected failure") -> None:
        """Make the next call of `method` answer with a gRPC error (fault injection)."""
        self._faults[method] = (status, message)

    def calls(self, method: str | None = None, *, volume: str | None = None) -> list[Call]:
        return [
            c for c in self._calls if (method is None or c.method == method) and (volume is None or c.volume == volume)
        ]

    def commits(self, volume: str | None = None) -> int:
        return len(self.calls("VolumeCommit", volume=volume))

    def removals(self, volume: str | None = None) -> list[str]:
        return [
            c.path
            for c in self._calls
            if c.method in {"VolumeRemoveFile", "VolumeRemoveFile2"} and (volume is None or c.volume == volume)
        ]
