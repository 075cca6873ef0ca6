"""Hostile input on every surface, counted (issue #7, "Bad input tried").

Every URL with an id in its path (found by walking the URL conf, GET and POST), every form
field and CLI argument that takes an id, and the files the panel reads (mix job files,
session folders, the file:// snapshot store, inspected volumes) meet malformed and hostile
values: `..`, `/`, NUL, very long, Unicode look-alikes, empty, truncated, huge and wrongly
typed JSON, symlinks and hard links out of every root, a folder replaced by a file, a
volume or bucket that does not exist.

Each input is recorded with the `bad_input` fixture: *rejected* means a clear answer (a 4xx
page, a one-line CLI error, a `problem` or a skip on the report, an untouched file) and no
traceback, 5xx or errored operation; *touched_outside* counts files created, changed or
removed in a sentinel folder outside every root, some of whose files are the targets of
the links. A test records every input first and asserts once at the end.
"""

import hashlib
import json
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path
from urllib.parse import quote, urlparse

import pytest
from django.conf import settings
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import Operation
from apps.audit.operations import execute
from apps.mixjobs.models import MixJob
from apps.pods.models import Pod, Snapshot
from apps.pods.services import host_default
from apps.pods.snapshots import store_from_url
from apps.volumes.models import Volume
from controlpanel.errors import InvalidInput
from controlpanel.paths import validate_id
from tests.mixjobs.helpers import index_path, job_path, media, output_path, outputs, write_job
from tests.separations.helpers import put_session, volume_root
from tests.test_security import is_public, panel_urls, row_counts

pytestmark = pytest.mark.django_db

# Ids a person or a script could type: traversal, separators, NUL, length, look-alikes.
HOSTILE_IDS = [
    "..",
    ".",
    "../etc",
    "../../../../etc/passwd",
    "a/b",
    "/etc",
    "a\\b",
    "a\x00b",
    "a\nb",
    "x" * 129,
    "x" * 300,
    "x" * 5000,
    "\uff50od-1",  # fullwidth p
    "pod\u20101",  # hyphen U+2010
    "\u0440\u043ed",  # Cyrillic р and о
    "pod\u202e1",  # right-to-left override
    "",
    " ",
    " pod",
    "%2e%2e",
    "..%2f..%2fetc",
    "$(id)",
    "*",
    "~root",
]
# Only where the value never passes through an HTTP encoding (CLI, services).
CLI_ONLY_IDS = ["\udcff", "-rf"]
# Sent unquoted in a URL, so the server decodes them itself.
RAW_URL_IDS = ["%2e%2e", "..%2f..%2fetc", "a%00b", "%20", "%2F", "%c0%ae%c0%ae", "%ef%bc%8e%ef%bc%8e"]
HOSTILE_FOLDERS = ["..", "../etc", "a/../../etc", "/..", "a\x00b", "./.", "//..//", "a/\x00/b"]
HOSTILE_S3_URLS = ["", "s3://", "s3:///prefix", "s3://b/../x", "http://bucket/x", "file:///etc", "s3://b\x00/x"]
HOSTILE_VOLUME_URLS = ["", "local://", "local://relative/path", "file:///etc", "modal://", "http://x", "local:///\x00"]
REFUSED = {400, 401, 403, 404, 405}
NOW = timezone.now()
OLD = NOW - timedelta(days=30)


# -- the sentinel outside every root ----------------------------------------------------------


class Outside:
    """A folder beside the roots; the links point into it; it must never change."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir()
        (root / "secret.txt").write_bytes(b"do not touch\n")
        (root / "dir").mkdir()
        (root / "dir" / "keep.bin").write_bytes(b"\1" * 100)
        (root / "dir" / "jobs").mkdir()
        (root / "dir" / "final_mix.wav").write_bytes(b"RIFF" + b"\0" * 60)

    def file(self, name: str, content: bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    def fingerprint(self) -> dict[str, tuple]:
        found: dict[str, tuple] = {}
        for folder, dirs, files in os.walk(self.root, followlinks=False):
            for name in dirs + files:
                path = os.path.join(folder, name)
                st = os.lstat(path)
                if os.path.islink(path):
                    found[path] = ("link", os.readlink(path))
                elif os.path.isdir(path):
                    found[path] = ("dir",)
                else:
                    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                    found[path] = (st.st_size, st.st_mtime_ns, digest, st.st_nlink)
        return found

    def touched(self, before: dict[str, tuple]) -> int:
        after = self.fingerprint()
        return sum(1 for path in before.keys() | after.keys() if before.get(path) != after.get(path))


@pytest.fixture
def outside(tmp_path):
    return Outside(tmp_path / "outside")


class Tally:
    """Records every input with `bad_input`, collects the failures, asserts once."""

    def __init__(self, bad_input):
        self.bad_input = bad_input
        self.failures: list[str] = []
        self.count = 0

    def __call__(self, surface: str, value: str, *, rejected: bool, touched: int, detail: str = "") -> None:
        self.bad_input(surface, value, rejected=rejected, touched_outside=touched)
        self.count += 1
        if not rejected or touched:
            self.failures.append(f"{surface} {value[:80]!r}: rejected={rejected} touched={touched} {detail[:300]}")

    def check(self) -> None:
        assert self.count, "no input was tried"
        assert not self.failures, f"{len(self.failures)} of {self.count} inputs:\n" + "\n".join(self.failures)


@pytest.fixture
def tally(bad_input):
    return Tally(bad_input)


def errored_operations() -> list[str]:
    return [f"#{op.pk} {op.kind}: {op.error}" for op in Operation.objects.filter(status=Operation.Status.ERRORED)]


def clear_message(text: str) -> bool:
    """One line a person can read: not empty, no traceback, not an unexpected error's repr."""
    return bool(text.strip()) and "Traceback" not in text and " errored" not in text and "\n" not in text.strip()


def run_cli(*args: str) -> tuple[str | None, str]:
    """(None, stdout) when the command succeeded, (message, "") when it raised CommandError.
    Any other exception propagates: it is a bug the test must show."""
    out = StringIO()
    try:
        call_command(*args, stdout=out, stderr=StringIO())
    except CommandError as exc:
        return str(exc), ""
    return None, out.getvalue()


# -- (a) every URL with an id in its path, GET and POST ----------------------------------------


def id_urls():
    return [(name, path, view, kwargs, text_args) for name, path, view, kwargs, text_args in panel_urls() if text_args]


def test_the_sweep_covers_every_url_with_an_id():
    names = {name for name, *_ in id_urls()}
    assert {"pods:detail", "pods:stop", "separations:detail", "separations:cleanup-run", "volumes:inspect"} <= names
    files = {"pods:snapshot-files", "pods:snapshot-download", "pods:snapshot-restore", "pods:snapshot-restore-run"}
    assert files <= names
    assert "api:sessions-cleanup-session" in names


def csrf_client(client, staff_user):
    """A staff client that enforces CSRF and sends a valid token, as a browser would."""
    client.force_login(staff_user)
    client.handler.enforce_csrf_checks = True
    client.get(reverse("pods:list"))
    return client, client.cookies["csrftoken"].value


def test_urls_refuse_hostile_ids_on_get_and_post(client, staff_user, settings, outside, tally):
    settings.SESSIONS_API_TOKEN = "t0ken-for-the-sweep"
    client, token = csrf_client(client, staff_user)
    api_auth = {"HTTP_AUTHORIZATION": f"Bearer {settings.SESSIONS_API_TOKEN}"}
    for name, path, view, kwargs, text_args in id_urls():
        for arg in text_args:
            sample = quote(str(kwargs[arg]))
            values = [(value, quote(value, safe="")) for value in HOSTILE_IDS] + [(raw, raw) for raw in RAW_URL_IDS]
            for value, in_path in values:
                hostile_path = path.replace(sample, in_path, 1)
                for method in ("GET", "POST"):
                    before, rows = outside.fingerprint(), row_counts()
                    extra = api_auth if is_public(view) else {}
                    if method == "GET":
                        response = client.get(hostile_path, **extra)
                    else:
                        data = {"confirm": "yes", "csrfmiddlewaretoken": token}
                        response = client.post(hostile_path, data, **extra)
                    status = response.status_code
                    unchanged = row_counts() == rows
                    clean = b"Traceback" not in response.content and not errored_operations()
                    rejected = clean and unchanged and (status in REFUSED or (status == 302 and method == "POST"))
                    tally(
                        f"url:{method}",
                        f"{name}[{arg}]={value}",
                        rejected=rejected,
                        touched=outside.touched(before),
                        detail=f"{hostile_path} answered {status}, rows unchanged={unchanged}",
                    )
    tally.check()


# -- (b) form fields and query parameters that take an id ---------------------------------------


def valid_id(value: str) -> bool:
    try:
        validate_id(value)
    except InvalidInput:
        return False
    return True


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_form_fields_refuse_hostile_ids(client, staff_user, outside, tally, tmp_path):
    client, token = csrf_client(client, staff_user)
    Volume.objects.create(name="vol-forms", url=f"local://{tmp_path / 'volumes' / 'vol-forms'}")
    # A real expired job that a cleanup with a hostile session must not reach.
    kept = write_job("real", "job1", state="complete", updated_at=OLD)

    def post(name, data, *args):
        client.cookies.pop("messages", None)  # only this request's messages count
        return client.post(reverse(name, args=args), {**data, "csrfmiddlewaretoken": token})

    def get(name, params, *args):
        return client.get(reverse(name, args=args), params)

    def refused_with_message(response, expect_status=302) -> bool:
        return response.status_code == expect_status and any(clear_message(m) for m in messages_of(response))

    def refused_with_page_error(response, expect_status=(200, 400)) -> bool:
        error = (response.context or {}).get("error") if response.context else None
        if error is None and response.status_code == 400 and not response.context:
            # Refused before any view ran (a NUL byte in the URL): the answer is the one line.
            error = response.content.decode()
        return response.status_code in expect_status and bool(error) and clear_message(str(error))

    def refused_in_the_form(field: str):
        def refused(response) -> bool:
            """The provision form keeps a refused value in its field with the error beside it (400)."""
            form = (response.context or {}).get("form") if response.context else None
            errors = form.errors.get(field, []) if form is not None else []
            return response.status_code == 400 and any(clear_message(str(error)) for error in errors)

        return refused

    forms = [
        ("mixjobs cleanup preview ?session", lambda v: get("mixjobs:cleanup", {"session": v}), refused_with_page_error),
        (
            "mixjobs cleanup run session",
            lambda v: post("mixjobs:cleanup-run", {"confirm": "yes", "session": v}),
            refused_with_message,
        ),
        (
            "sessions manual preview ?session",
            lambda v: get("separations:cleanup", {"session": v}, "manual"),
            refused_with_page_error,
        ),
        (
            "sessions manual run session",
            lambda v: post("separations:cleanup-run", {"confirm": "yes", "session": v}, "manual"),
            refused_with_message,
        ),
        ("pods provision pod_id", lambda v: post("pods:provision", {"pod_id": v}), refused_in_the_form("pod_id")),
        (
            "pods provision host",
            lambda v: post("pods:provision", {"pod_id": "sweep-pod", "host": v}),
            refused_in_the_form("host"),
        ),
    ]

    for label, send, refused in forms:
        # An empty session or host field means "none named" (all sessions, the default host),
        # and the provision form trims spaces: those values are not hostile there.
        values = [v for v in HOSTILE_IDS if (v or "pod_id" in label) and not valid_id(v.strip())]
        for value in values:
            before, rows = outside.fingerprint(), row_counts()
            response = send(value)
            answered = refused(response)
            unchanged = row_counts() == rows
            rejected = answered and unchanged and not errored_operations() and response.status_code < 500
            tally(
                "form",
                f"{label}={value}",
                rejected=rejected,
                touched=outside.touched(before),
                detail=f"{response.status_code} {messages_of(response)} rows unchanged={unchanged}",
            )
    for field, values, fixed in [
        ("folder", HOSTILE_FOLDERS, {"s3_url": "s3://bucket/prefix"}),
        ("s3_url", HOSTILE_S3_URLS, {"folder": ""}),
    ]:
        for value in values:
            before, rows = outside.fingerprint(), row_counts()
            response = post("volumes:crosscheck", {**fixed, field: value}, "vol-forms")
            unchanged = row_counts() == rows
            tally(
                "form",
                f"volume crosscheck {field}={value}",
                rejected=refused_with_message(response) and unchanged,
                touched=outside.touched(before),
                detail=f"{response.status_code} {messages_of(response)}",
            )
    # Filters only narrow a list: a hostile value must give a page, never an error or a change.
    for name, param in [
        ("mixjobs:list", "session"),
        ("dashboard:audit", "target_id"),
        ("dashboard:audit", "actor_name"),
    ]:
        for value in HOSTILE_IDS:
            before, rows = outside.fingerprint(), row_counts()
            response = get(name, {param: value})
            tally(
                "filter",
                f"{name}?{param}={value}",
                rejected=response.status_code in {200, 400} and row_counts() == rows,
                touched=outside.touched(before),
                detail=str(response.status_code),
            )
    assert kept.exists()
    tally.check()


# -- (c) management command arguments ----------------------------------------------------------


def cli_cases(tmp_path) -> list[tuple[str, tuple[str, ...]]]:
    cases = []
    for value in HOSTILE_IDS + CLI_ONLY_IDS:
        for action in ("show", "stop", "start", "deprovision", "delete", "provision"):
            cases.append((f"pods {action}", ("pods", action, value)))
        cases.append(("pods files", ("pods", "files", value, "1")))
        cases.append(("pods restore-path", ("pods", "restore-path", value, "1", "/workspace/a")))
        if value:  # an empty --host means the default host
            cases.append(("pods provision --host", ("pods", "provision", "sweep-pod", "--host", value)))
        cases += [
            ("mixjobs cleanup --session", ("mixjobs", "cleanup", "--session", value)),
            ("mixjobs cleanup --dry-run --session", ("mixjobs", "cleanup", "--dry-run", "--session", value)),
            ("sessions cleanup --session", ("sessions", "cleanup", "--policy", "manual", "--session", value)),
            (
                "sessions cleanup --dry-run --session",
                ("sessions", "cleanup", "--policy", "manual", "--dry-run", "--session", value),
            ),
            ("sessions cleanup --policy", ("sessions", "cleanup", "--policy", value)),
            ("volumes add NAME", ("volumes", "add", value, f"local://{tmp_path / 'volumes' / 'cli'}")),
            ("volumes inspect NAME", ("volumes", "inspect", value)),
            ("volumes preset NAME", ("volumes", "preset", value, "s3-mount")),
            ("volumes crosscheck NAME", ("volumes", "crosscheck", value, "", "s3://bucket/prefix")),
        ]
    cases += [("volumes add URL", ("volumes", "add", "vol-cli-new", url)) for url in HOSTILE_VOLUME_URLS]
    cases += [
        ("volumes crosscheck FOLDER", ("volumes", "crosscheck", "vol-cli", folder, "s3://bucket/prefix"))
        for folder in HOSTILE_FOLDERS
    ]
    cases += [("volumes crosscheck S3_URL", ("volumes", "crosscheck", "vol-cli", "", url)) for url in HOSTILE_S3_URLS]
    return cases


def test_cli_arguments_refuse_hostile_ids(outside, tally, tmp_path):
    Volume.objects.create(name="vol-cli", url=f"local://{tmp_path / 'volumes' / 'vol-cli'}")
    (tmp_path / "volumes" / "vol-cli").mkdir(parents=True)
    kept = write_job("real", "job1", state="complete", updated_at=OLD)
    for label, args in cli_cases(tmp_path):
        before = outside.fingerprint()
        volumes_before = set(Volume.objects.values_list("name", flat=True))
        try:
            message, output = run_cli(*args)
        except SystemExit as exc:  # argparse leaving the process is not a clear refusal
            message, output = None, f"SystemExit({exc.code})"
        value = args[-1] if label.endswith(("--session", "--host", "--policy", "URL", "S3_URL")) else args[2]
        if label in {"volumes crosscheck FOLDER"}:
            value = args[3]
        new_volumes = set(Volume.objects.values_list("name", flat=True)) - volumes_before
        rejected = message is not None and clear_message(message) and not errored_operations() and not new_volumes
        tally(
            "cli",
            f"{label}={value}",
            rejected=rejected,
            touched=outside.touched(before),
            detail=f"error={message!r} output={output[:120]!r} new volumes={new_volumes}",
        )
    assert kept.exists()
    assert not Pod.objects.exists()
    tally.check()


# -- (d) files: mix jobs -------------------------------------------------------------------------


def job_json(session_id: str, job_id: str, *, state="complete", updated_at=OLD, **fields) -> bytes:
    naive = updated_at.replace(tzinfo=None).isoformat()
    return json.dumps(
        {"job_id": job_id, "session_id": session_id, "state": state, "updated_at": naive, **fields}
    ).encode()


def put(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def link(path: Path, target: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


def hardlink(path: Path, target: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.link(target, path)
    return path


@dataclass
class FileCase:
    name: str
    arrange: object  # (outside) -> list of paths (inside a root) that must still be there afterwards
    xfail: str = ""


def _huge(out):
    path = put(job_path("s-huge", "j1"), b"")
    os.truncate(path, 17 * 1024 * 1024)  # sparse: over MAX_JOB_FILE_BYTES without writing it
    return [path]


def _named(session_id: str, file_name: str, job_id: str):
    content = job_json(session_id, job_id, updated_at=NOW)  # not expired: it must stay

    def arrange(out):
        folder = media() / session_id / "jobs"
        folder.mkdir(parents=True, exist_ok=True)
        path = Path(os.fsdecode(os.path.join(os.fsencode(folder), os.fsencode(file_name))))
        path.write_bytes(content)
        return [path]

    return arrange


def _bytes_named(session_id: bytes, file_name: bytes):
    def arrange(out):
        folder = os.path.join(os.fsencode(media()), session_id, b"jobs")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, file_name)
        with open(path, "wb") as handle:
            handle.write(job_json("x", "x", updated_at=NOW))
        return [Path(os.fsdecode(path))]

    return arrange


def _session_is_file(out):
    return [put(media() / "s-file", job_json("s-file", "j1"))]


def _output_folder_is_file(out):
    path = write_job("s-outfile", "j1", state="complete", updated_at=OLD, output=False)
    return [put(outputs() / "s-outfile", b"not a folder")] + [path][:0]


def _lock_symlink(out):
    write_job("s-lock", "j1", state="complete", updated_at=OLD)
    return [link(media() / "s-lock" / "jobs" / ".lock", out.root / "secret.txt")]


def _lock_folder(out):
    write_job("s-lockdir", "j1", state="complete", updated_at=OLD)
    folder = media() / "s-lockdir" / "jobs" / ".lock"
    folder.mkdir()
    return [folder]


def _job_symlink(out):
    target = out.file("job-target.json", job_json("s-link", "j1"))
    return [link(job_path("s-link", "j1"), target)]


def _job_hardlink(out):
    target = out.file("job-hard.json", job_json("s-hard", "j1"))
    return [hardlink(job_path("s-hard", "j1"), target)]


def _index_symlink(out):
    write_job("s-idx", "j1", state="complete", updated_at=OLD, index=None)
    target = out.file("index-target.json", json.dumps({"job_id": "j1", "session_id": "s-idx"}).encode())
    return [link(index_path("j1"), target)]


def _index_hardlink(out):
    write_job("s-idxh", "jh1", state="complete", updated_at=OLD, index=None)
    target = out.file("index-hard.json", json.dumps({"job_id": "jh1", "session_id": "s-idxh"}).encode())
    return [hardlink(index_path("jh1"), target)]


def _index_folder_symlink(out):
    write_job("s-idxdir", "j1", state="complete", updated_at=OLD, index=None)
    out.file("index-dir/j1.json", json.dumps({"job_id": "j1", "session_id": "s-idxdir"}).encode())
    # The other jobs' index files move out with the folder.
    for entry in (media() / "jobs_index").iterdir():
        entry.rename(out.root / "index-dir" / entry.name)
    (media() / "jobs_index").rmdir()
    return [link(media() / "jobs_index", out.root / "index-dir")]


def _session_symlink(out):
    out.file("dir/jobs/j1.json", job_json("s-sesslink", "j1"))
    return [link(media() / "s-sesslink", out.root / "dir")]


def _jobs_folder_symlink(out):
    out.file("dir/jobs/j2.json", job_json("s-jobslink", "j2"))
    return [link(media() / "s-jobslink" / "jobs", out.root / "dir" / "jobs")]


def _output_symlink(out):
    write_job("s-out", "j1", state="complete", updated_at=OLD, output=False)
    return [link(output_path("s-out"), out.root / "dir" / "final_mix.wav")]


def _output_hardlink(out):
    write_job("s-outh", "j1", state="complete", updated_at=OLD, output=False)
    return [hardlink(output_path("s-outh"), out.root / "dir" / "final_mix.wav")]


def _output_folder_symlink(out):
    write_job("s-outdir", "j1", state="complete", updated_at=OLD, output=False)
    return [link(outputs() / "s-outdir", out.root / "dir")]


def _media_root_is_file(out):
    media().parent.mkdir(parents=True, exist_ok=True)
    return [put(media(), b"not a folder")]


def _jobs_is_file(out):
    return [put(media() / "s-jobsfile" / "jobs", b"not a folder")]


MIX_CASES = [
    FileCase("empty job file", lambda out: [put(job_path("s-empty", "j1"), b"")]),
    FileCase("truncated JSON", lambda out: [put(job_path("s-trunc", "j1"), job_json("s-trunc", "j1")[:25])]),
    FileCase("huge job file (17 MiB)", _huge),
    FileCase("JSON list", lambda out: [put(job_path("s-list", "j1"), b'["complete"]')]),
    FileCase("JSON string", lambda out: [put(job_path("s-str", "j1"), b'"complete"')]),
    FileCase("JSON number", lambda out: [put(job_path("s-num", "j1"), b"42")]),
    FileCase("JSON null", lambda out: [put(job_path("s-null", "j1"), b"null")]),
    FileCase("not UTF-8", lambda out: [put(job_path("s-bin", "j1"), b"\xff\xfe{\x00")]),
    FileCase(
        "fields of the wrong type",
        lambda out: [
            put(
                job_path("s-types", "j1"),
                json.dumps(
                    {"job_id": ["j1"], "session_id": {"a": 1}, "state": ["complete"], "updated_at": 12345, "extra": []}
                ).encode(),
            )
        ],
    ),
    FileCase(
        "state and progress of the wrong type",
        lambda out: [put(job_path("s-types2", "j1"), job_json("s-types2", "j1", state=7, progress="lots"))],
    ),
    FileCase(
        "updated_at at the end of time",
        lambda out: [
            put(
                job_path("s-future", "j1"),
                json.dumps(
                    {"job_id": "j1", "session_id": "s-future", "state": "complete", "updated_at": "9999-12-31T23:59:59"}
                ).encode(),
            )
        ],
    ),
    FileCase(
        "deeply nested JSON",
        lambda out: [put(job_path("s-deep", "j1"), b'{"extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")],
    ),
    FileCase(
        "number with 5000 digits",
        lambda out: [put(job_path("s-digits", "j1"), b'{"job_id": "j1", "progress": ' + b"9" * 5000 + b"}")],
    ),
    FileCase("job name with fullwidth letters", _named("s-names", "\uff50od-1.json", "x")),
    FileCase("job name with a newline", _named("s-names2", "a\nb.json", "a\nb")),
    FileCase("job name of 250 characters", _named("s-names3", "x" * 250 + ".json", "x" * 250)),
    FileCase("job name that is not UTF-8", _bytes_named(b"s-names4", b"\xff.json")),
    FileCase("session name with fullwidth letters", _named("\uff50od-1", "j1.json", "j1")),
    FileCase("session name with a space", _named("a b", "j1.json", "j1")),
    FileCase("session name that is not UTF-8", _bytes_named(b"s\xff", b"j1.json")),
    FileCase("session name of dots", _named("...", "j1.json", "j1")),
    FileCase("session folder replaced by a file", _session_is_file),
    FileCase("jobs folder replaced by a file", _jobs_is_file),
    FileCase("output folder replaced by a file", _output_folder_is_file),
    FileCase("media root replaced by a file", _media_root_is_file),
    FileCase("media root missing", lambda out: []),
    FileCase("lock file is a symlink out of the root", _lock_symlink),
    FileCase("lock file is a folder", _lock_folder),
    FileCase("job file symlink out of the root", _job_symlink),
    FileCase("job file hard link out of the root", _job_hardlink),
    FileCase("index symlink out of the root", _index_symlink),
    FileCase("index hard link out of the root", _index_hardlink),
    FileCase("jobs_index folder symlink out of the root", _index_folder_symlink),
    FileCase("session folder symlink out of the root", _session_symlink),
    FileCase("jobs folder symlink out of the root", _jobs_folder_symlink),
    FileCase("final_mix.wav symlink out of the root", _output_symlink),
    FileCase("final_mix.wav hard link out of the root", _output_hardlink),
    FileCase("outputs session folder symlink out of the root", _output_folder_symlink),
]


def _case_params(cases):
    return [
        pytest.param(
            case, id=case.name, marks=[pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        )
        for case in cases
    ]


@pytest.mark.parametrize("case", _case_params(MIX_CASES))
def test_mix_job_files_that_are_hostile_are_reported_and_left_alone(case, outside, tally):
    if case.name != "media root replaced by a file" and case.name != "media root missing":
        expired = write_job("good-old", "old1", state="complete", updated_at=OLD)
        fresh = write_job("good-new", "new1", state="complete", updated_at=NOW)
    else:
        expired = fresh = None
    kept = case.arrange(outside)
    before = outside.fingerprint()
    sync_error, sync_out = run_cli("mixjobs", "sync", "--json")
    cleanup_error, cleanup_out = run_cli("mixjobs", "cleanup", "--json")
    problems = []
    # Only a media root that is not a folder may stop the run, with one clear line.
    if (sync_error or cleanup_error) and (
        case.name != "media root replaced by a file"
        or not all(clear_message(e) for e in (sync_error, cleanup_error) if e)
    ):
        problems.append(f"sync: {sync_error!r} cleanup: {cleanup_error!r}")
    problems += errored_operations()
    problems += [f"{path} is gone" for path in kept if not os.path.lexists(path)]
    if expired is not None:
        problems += [f"{expired} (expired) was not deleted"] if expired.exists() and not cleanup_error else []
        problems += [f"{fresh} (not expired) was deleted"] if not fresh.exists() else []
    tally(
        "mix-file",
        case.name,
        rejected=not problems,
        touched=outside.touched(before),
        detail="; ".join(problems),
    )
    tally.check()


# -- (d) files: separation sessions on a local volume -------------------------------------------


def _sessions() -> Path:
    return volume_root() / "sessions"


def _old(path: Path) -> Path:
    stamp = OLD.timestamp()
    os.utime(path, (stamp, stamp), follow_symlinks=False)
    return path


def _s_named(name: str):
    def arrange(out):
        folder = put_session(name, mtime=OLD)
        return [folder / "input.wav"]

    return arrange


def _s_bytes_named(out):
    folder = os.path.join(os.fsencode(_sessions()), b"s\xff")
    os.makedirs(folder)
    path = os.path.join(folder, b"input.wav")
    with open(path, "wb") as handle:
        handle.write(b"\0" * 10)
    return [Path(os.fsdecode(path))]


def _s_file(out):
    return [_old(put(_sessions() / "s-file", b"a file, not a session"))]


def _s_symlink(out):
    # Old enough to go: the cleanup removes the link, never what it points at.
    _old(link(_sessions() / "s-link", out.root / "dir"))
    return []


def _s_inner_symlink(out):
    put_session("s-inner", mtime=OLD)
    _old(link(_sessions() / "s-inner" / "extra.wav", out.root / "secret.txt"))
    _old(link(_sessions() / "s-inner" / "more", out.root / "dir"))
    _old(_sessions() / "s-inner")
    return []


def _s_output_symlink(out):
    folder = _sessions() / "s-outlink"
    folder.mkdir(parents=True)
    put(folder / "input.wav", b"\0" * 10)
    link(folder / "output", out.root / "dir")
    for path in (folder / "input.wav", folder / "output", folder):
        _old(path)
    return []


def _s_hardlink(out):
    put_session("s-hard", mtime=OLD)
    target = out.file("session-hard.flac", b"\2" * 50)
    _old(hardlink(_sessions() / "s-hard" / "extra.flac", target))
    _old(_sessions() / "s-hard")
    return []


def _s_sessions_symlink(out):
    out.file("sessions-tree/s-away/input.wav", b"\0" * 10)
    _old(out.root / "sessions-tree" / "s-away")
    volume_root().mkdir(parents=True, exist_ok=True)
    return [link(_sessions(), out.root / "sessions-tree")]


SESSION_CASES = [
    FileCase("session folder replaced by a file", _s_file),
    FileCase("session folder symlink out of the root", _s_symlink),
    FileCase("symlinks inside a session out of the root", _s_inner_symlink),
    FileCase("output folder symlink out of the root", _s_output_symlink),
    FileCase("hard link inside a session out of the root", _s_hardlink),
    FileCase("sessions folder symlink out of the root", _s_sessions_symlink),
    FileCase("session name with fullwidth letters", _s_named("\uff50od-1")),
    FileCase("session name with a space", _s_named("a b")),
    FileCase("session name of dots", _s_named("...")),
    FileCase("session name of 200 characters", _s_named("x" * 200)),
    FileCase("session name that is not UTF-8", _s_bytes_named),
]


@pytest.mark.parametrize("case", _case_params(SESSION_CASES))
def test_session_folders_that_are_hostile_are_ignored_or_unlinked(case, outside, tally):
    sessions_symlink = case.name == "sessions folder symlink out of the root"
    expired = None if sessions_symlink else put_session("good-old", mtime=OLD)
    fresh = None if sessions_symlink else put_session("good-new", mtime=NOW)
    kept = case.arrange(outside)
    before = outside.fingerprint()
    errors = {}
    for args in [
        ("sessions", "sync"),
        ("sessions", "cleanup", "--policy", "download", "--dry-run"),
        ("sessions", "cleanup", "--policy", "download"),
        ("sessions", "cleanup", "--policy", "exit"),
        ("sessions", "sync"),
    ]:
        error, _ = run_cli(*args)
        if error:
            errors[" ".join(args)] = error
    # The hostile names asked for by hand: refused with one line, never an unexpected error.
    for name in ["s-file", "\uff50od-1", "a b", "...", "x" * 200, "s-away"]:
        error, _ = run_cli("sessions", "cleanup", "--policy", "manual", "--session", name)
        if error is None and name != "s-away":
            errors[f"manual {name}"] = "accepted"
        elif error is not None and not clear_message(error):
            errors[f"manual {name}"] = error
    problems = [f"{k}: {v}" for k, v in errors.items()] + errored_operations()
    problems += [f"{path} is gone" for path in kept if not os.path.lexists(path)]
    if expired is not None:
        problems += [f"{expired} (expired) was not deleted"] if expired.exists() else []
        problems += [f"{fresh} (not expired) was deleted"] if not fresh.exists() else []
    tally(
        "session-file",
        case.name,
        rejected=not problems,
        touched=outside.touched(before),
        detail="; ".join(problems),
    )
    tally.check()


# -- (d) files: the file:// snapshot store -----------------------------------------------------


def _snapshot(pod: Pod, *, hours: int, status=Snapshot.Status.COMPLETE) -> Snapshot:
    store = store_from_url()
    finished = NOW - timedelta(hours=hours)
    snapshot = Snapshot.objects.create(
        pod=pod, store_url=store.url, status=status, total_bytes=5, finished_at=finished, created_at=finished
    )
    store.put_small(f"{snapshot.prefix}/workspace.tar", b"12345")
    return snapshot


def _store_root() -> Path:
    return Path(urlparse(settings.SNAPSHOT_STORE_URL).path)


def test_snapshot_store_links_out_of_the_root_are_never_followed(outside, tally):
    pod = Pod.objects.create(pod_id="snap-links", host=host_default(), image="x", status=Pod.Status.STOPPED)
    newest, older = _snapshot(pod, hours=1), _snapshot(pod, hours=2)
    folder = _store_root() / older.prefix
    link(folder / "secret.tar", outside.root / "secret.txt")
    link(folder / "dir", outside.root / "dir")
    before = outside.fingerprint()
    error, output = run_cli("pods", "retention", "--keep", "1")
    older.refresh_from_db()
    problems = [f"retention: {error}"] if error else []
    problems += errored_operations()
    problems += [] if older.status == Snapshot.Status.DELETED else [f"older snapshot is {older.status}"]
    problems += [] if (_store_root() / newest.prefix / "workspace.tar").exists() else ["the kept snapshot is gone"]
    tally(
        "snapshot-file",
        "symlinks inside a retired snapshot",
        rejected=not problems,
        touched=outside.touched(before),
        detail="; ".join(problems),
    )

    # A snapshot folder, or a pod folder, that is itself a link out of the store.
    for label, make in [
        ("snapshot folder symlink out of the root", lambda s: _store_root() / s.prefix),
        ("pod folder symlink out of the root", lambda s: _store_root() / s.pod.pod_id),
    ]:
        pod_id = "snap-" + label.split()[0]
        linked = Pod.objects.create(pod_id=pod_id, host=host_default(), image="x", status=Pod.Status.STOPPED)
        _snapshot(linked, hours=1)
        retired = _snapshot(linked, hours=2, status=Snapshot.Status.FAILED)
        target = outside.root / f"store-{pod_id}"
        target.mkdir()
        (target / "workspace.tar").write_bytes(b"precious")
        path = make(retired)
        # Replace the real folder by a link to a look-alike outside.
        for child in sorted(path.rglob("*"), reverse=True):
            child.unlink() if child.is_file() else child.rmdir()
        path.rmdir()
        if path.name == pod_id:
            (target / str(retired.pk)).mkdir()
            (target / str(retired.pk) / "workspace.tar").write_bytes(b"precious")
        path.symlink_to(target)
        before = outside.fingerprint()
        errored = len(errored_operations())
        error, _ = run_cli("pods", "retention", "--keep", "1")
        retired.refresh_from_db()
        problems = [] if error and clear_message(error) else [f"retention answered {error!r}"]
        problems += errored_operations()[errored:]
        problems += [] if retired.status == Snapshot.Status.FAILED else [f"marked {retired.status}"]
        problems += [] if path.is_symlink() else ["the link is gone"]
        tally(
            "snapshot-file", label, rejected=not problems, touched=outside.touched(before), detail="; ".join(problems)
        )
        retired.delete()  # the next case starts without this refusal in the way
    tally.check()


def test_snapshot_store_hard_link_out_of_the_root_is_left_alone(outside, tally):
    pod = Pod.objects.create(pod_id="snap-hard", host=host_default(), image="x", status=Pod.Status.STOPPED)
    _snapshot(pod, hours=1)
    older = _snapshot(pod, hours=2)
    hardlink(_store_root() / older.prefix / "hard.tar", outside.file("snapshot-hard.tar", b"\3" * 40))
    before = outside.fingerprint()
    error, _ = run_cli("pods", "retention", "--keep", "1")
    problems = ([f"retention: {error}"] if error else []) + errored_operations()
    tally(
        "snapshot-file",
        "hard link inside a retired snapshot",
        rejected=not problems,
        touched=outside.touched(before),
        detail="; ".join(problems),
    )
    tally.check()


# -- (d) files: an inspected local volume -------------------------------------------------------


def test_inspection_counts_links_out_of_the_root_without_following_them(outside, tally, tmp_path):
    root = tmp_path / "volumes" / "inspected"
    put(root / "results" / "a.bin", b"\0" * 10)
    link(root / "results" / "secret", outside.root / "secret.txt")
    link(root / "results" / "away", outside.root / "dir")
    link(root / "cache", outside.root / "dir")
    hardlink(root / "results" / "hard.bin", outside.file("inspect-hard.bin", b"\4" * 30))
    put(root / "\uff50od-1" / "b.bin", b"\0" * 5)
    Volume.objects.create(name="inspected", url=f"local://{root}")
    before = outside.fingerprint()
    error, output = run_cli("volumes", "inspect", "inspected", "--json")
    problems = [f"inspect: {error}"] if error else []
    problems += errored_operations()
    if output:
        report = json.loads(output)
        # a.bin, hard.bin, b.bin and the links themselves (their lstat size): never what they point at.
        links = [root / "results" / "secret", root / "results" / "away", root / "cache"]
        expected = 45 + sum(os.lstat(path).st_size for path in links)
        if report["total_bytes"] != expected:
            problems.append(f"total_bytes {report['total_bytes']}, expected {expected} (links not followed)")
    tally(
        "volume-file",
        "symlinks and a hard link out of an inspected volume",
        rejected=not problems,
        touched=outside.touched(before),
        detail="; ".join(problems),
    )
    before = outside.fingerprint()
    error, _ = run_cli("volumes", "crosscheck", "inspected", "cache", "s3://bucket/prefix")
    tally(
        "volume-file",
        "crosscheck of a folder that is a symlink out of the root",
        rejected=bool(error) and clear_message(error) and not errored_operations(),
        touched=outside.touched(before),
        detail=repr(error),
    )
    tally.check()


# -- (e) a volume, a folder or a bucket that does not exist ------------------------------------


def test_missing_volumes_and_buckets_are_clear_errors_and_nothing_is_created(
    outside, tally, tmp_path, s3_server, settings
):
    settings.AWS_ENDPOINT_URL = s3_server.endpoint_url
    missing = tmp_path / "volumes" / "no-such-volume"
    a_file = put(tmp_path / "volumes" / "a-file", b"not a folder")
    Volume.objects.create(name="missing", url=f"local://{missing}")
    Volume.objects.create(name="is-a-file", url=f"local://{a_file}")
    present = tmp_path / "volumes" / "present"
    put(present / "data" / "a.bin", b"\0" * 10)
    Volume.objects.create(name="present", url=f"local://{present}")
    buckets_before = {b["Name"] for b in s3_server.client().list_buckets().get("Buckets", [])}

    def attempt(
        surface: str, label: str, args: tuple[str, ...], *, must_not_exist: Path | None = None, said: str = ""
    ) -> None:
        before = outside.fingerprint()
        errored = len(errored_operations())
        error, output = run_cli(*args)
        answered = (error and clear_message(error)) or (said and error is None and said in output)
        problems = [] if answered else [f"answered {error!r} {output[:100]!r}"]
        problems += errored_operations()[errored:]
        if must_not_exist is not None and os.path.lexists(must_not_exist):
            problems.append(f"{must_not_exist} was created")
        tally(surface, label, rejected=not problems, touched=outside.touched(before), detail="; ".join(problems))

    attempt(
        "missing",
        "inspect a local volume whose folder is missing",
        ("volumes", "inspect", "missing"),
        must_not_exist=missing,
    )
    attempt("missing", "inspect a local volume that is a file", ("volumes", "inspect", "is-a-file"))
    attempt("missing", "inspect a volume that is not registered", ("volumes", "inspect", "never-added"))
    attempt(
        "missing",
        "crosscheck a missing volume folder",
        ("volumes", "crosscheck", "missing", "data", "s3://bucket/p"),
        must_not_exist=missing,
    )
    attempt(
        "missing", "crosscheck a folder missing on the volume", ("volumes", "crosscheck", "present", "nope", "s3://b/p")
    )
    attempt(
        "missing",
        "crosscheck against a bucket that does not exist",
        ("volumes", "crosscheck", "present", "data", "s3://no-such-bucket-sweep/prefix"),
    )
    settings.SESSIONS_VOLUME_URL = f"local://{tmp_path / 'volumes' / 'no-sessions'}"
    for args in [
        ("sessions", "sync"),
        ("sessions", "cleanup", "--policy", "download"),
        ("sessions", "cleanup", "--policy", "exit", "--dry-run"),
        ("sessions", "cleanup", "--policy", "manual", "--session", "abc"),
    ]:
        attempt(
            "missing",
            f"{' '.join(args)} on a sessions volume that does not exist",
            args,
            must_not_exist=tmp_path / "volumes" / "no-sessions",
        )
    attempt(
        "missing",
        "mixjobs cleanup of a session that does not exist",
        ("mixjobs", "cleanup", "--session", "nope"),
        said="no such session",
    )

    # Snapshots in a store whose bucket is gone: retention says so and creates no bucket.
    pod = Pod.objects.create(pod_id="gone-bucket", host=host_default(), image="x", status=Pod.Status.STOPPED)
    Snapshot.objects.create(pod=pod, store_url="s3://no-such-bucket-sweep/snaps", status=Snapshot.Status.FAILED)
    attempt("missing", "retention of a snapshot whose bucket does not exist", ("pods", "retention"))
    buckets_after = {b["Name"] for b in s3_server.client().list_buckets().get("Buckets", [])}
    assert buckets_after == buckets_before, f"buckets created: {buckets_after - buckets_before}"
    assert not MixJob.objects.exists()
    tally.check()


# -- (f) the Django admin: add and change forms, actions ----------------------------------------


class AdminForm(HTMLParser):
    """The fields a browser would send from an admin add/change page's form (`<form id="…_form">`):
    inputs with their values, checked boxes only, the selected (else first) option of a select,
    textareas, the inlines' management forms included."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.fields: dict[str, list[str]] = {}
        self._inside = False
        self._select: str | None = None
        self._select_first: str | None = None
        self._select_chosen = False
        self._textarea: str | None = None
        self.feed(html)

    def _add(self, name: str, value: str) -> None:
        self.fields.setdefault(name, []).append(value)

    def handle_starttag(self, tag, attrs):
        attr = dict(attrs)
        if tag == "form":
            self._inside = (attr.get("id") or "").endswith("_form")
        if not self._inside or (tag != "option" and not attr.get("name")):
            return
        if tag == "input" and attr.get("type") not in {"submit", "button", "file", "image", "reset"}:
            if attr.get("type") in {"checkbox", "radio"}:
                if "checked" in attr:
                    self._add(attr["name"], attr.get("value") or "on")
            else:
                self._add(attr["name"], attr.get("value") or "")
        elif tag == "select":
            self._select, self._select_first, self._select_chosen = attr["name"], None, False
            self._multiple = "multiple" in attr
        elif tag == "option" and self._select is not None:
            value = attr.get("value") or ""
            if self._select_first is None:
                self._select_first = value
            if "selected" in attr:
                self._add(self._select, value)
                self._select_chosen = True
        elif tag == "textarea":
            self._textarea = attr["name"]
            self._add(self._textarea, "")

    def handle_endtag(self, tag):
        if tag == "form":
            self._inside = False
        elif tag == "select" and self._select is not None:
            if not self._select_chosen and not self._multiple and self._select_first is not None:
                self._add(self._select, self._select_first)
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea is not None:
            self.fields[self._textarea][-1] += data


def admin_page_form(client, url: str) -> tuple[dict[str, list[str]], dict]:
    """(what the page's form would send, the form's fields by name) for an admin add/change page."""
    page = client.get(url)
    assert page.status_code == 200, f"GET {url} answered {page.status_code}"
    return AdminForm(page.content.decode()).fields, dict(page.context["adminform"].form.fields)


# Free text: anything but NUL may be stored; ids, URLs and paths have their own rules.
FREE_TEXT = {"purpose", "notes", "description", "reason", "message"}
HOSTILE_OTHER = ["a\x00b", "x" * 300, "../etc", "99999999999999999999999", "1e999", "-"]
HOSTILE_URLS = [*HOSTILE_VOLUME_URLS, "http://x\x00y", "x" * 3000, "local:///proc", "unix://"]
HOSTILE_TEXT = ["a\x00b"]


def hostile_values_for(name: str, field) -> list[str]:
    from django import forms

    if isinstance(field, forms.BooleanField):
        return []
    if not isinstance(field, forms.CharField) or isinstance(field, forms.ChoiceField):
        return HOSTILE_OTHER
    if name in FREE_TEXT:
        return HOSTILE_TEXT
    if "url" in name:
        return HOSTILE_URLS
    if name in {"path", "folder"}:
        return HOSTILE_FOLDERS
    return [v for v in HOSTILE_IDS if not valid_id(v.strip())]


def with_value(data: dict[str, list[str]], name: str, value: str) -> dict[str, list[str]]:
    changed = dict(data)
    # Date and time widgets send two parts: both get the hostile value.
    parts = [part for part in (f"{name}_0", f"{name}_1") if part in data]
    for key in parts or [name]:
        changed[key] = [value]
    return changed


@dataclass
class AdminCase:
    model: str  # app_label.model_name
    add: dict  # what to type into the add form to make it valid
    sample: object = None  # () -> an existing object for the change form, or None


def _volume_case(tmp_path: Path) -> AdminCase:
    folder = tmp_path / "volumes" / "vol-admin"
    folder.mkdir(parents=True, exist_ok=True)
    (tmp_path / "volumes" / "vol-sample").mkdir(parents=True, exist_ok=True)
    return AdminCase(
        "volumes.volume",
        {"name": "vol-admin", "url": f"local://{folder}"},
        lambda: Volume.objects.create(name="vol-sample", url=f"local://{tmp_path / 'volumes' / 'vol-sample'}"),
    )


def _layout_rule_case(tmp_path: Path) -> AdminCase:
    from apps.volumes.models import LayoutRule

    def volume() -> Volume:
        volume, _ = Volume.objects.get_or_create(name="vol-rules", url=f"local://{tmp_path / 'volumes' / 'r'}")
        return volume

    def sample():
        return LayoutRule.objects.create(volume=volume(), kind=LayoutRule.Kind.FOLDER_EXISTS, path="results")

    return AdminCase(
        "volumes.layoutrule", {"volume": lambda: str(volume().pk), "kind": "folder_exists", "path": "results"}, sample
    )


def _docker_host_case(tmp_path: Path) -> AdminCase:
    from apps.pods.models import DockerHost

    return AdminCase(
        "pods.dockerhost",
        {"name": "host-admin", "base_url": "unix:///run/no-such-docker.sock"},
        lambda: DockerHost.objects.create(name="host-sample", base_url="unix:///run/no-such-docker.sock"),
    )


def admin_cases(tmp_path: Path) -> list[AdminCase]:
    return [_volume_case(tmp_path), _layout_rule_case(tmp_path), _docker_host_case(tmp_path)]


def admin_registry() -> dict[str, object]:
    from django.contrib import admin

    return {model._meta.label_lower: model_admin for model, model_admin in admin.site._registry.items()}


def test_admin_add_and_change_forms_refuse_hostile_values(client, staff_user, outside, tally, tmp_path):
    client.force_login(staff_user)
    registry = admin_registry()
    cases = admin_cases(tmp_path)
    # Every admin form of ours that takes typed input has a case here. Holds are left out: their
    # target id is a free label checked by `hold_set` (tests/audit/test_holds.py).
    ours = {"audit", "pods", "separations", "mixjobs", "volumes"}
    request = _superuser_request(staff_user)
    editable = {
        label
        for label, model_admin in registry.items()
        if label.split(".")[0] in ours and model_admin.has_add_permission(request) and label != "audit.hold"
    }
    missing = editable - {case.model for case in cases}
    assert not missing, f"admin forms without a case: {missing}"

    for case in cases:
        model = registry[case.model].model
        app, name = case.model.split(".")
        targets = [("add", reverse(f"admin:{app}_{name}_add"), case.add)]
        if case.sample is not None:
            sample = case.sample()
            targets.append(("change", reverse(f"admin:{app}_{name}_change", args=[sample.pk]), {}))
        for form_kind, url, typed in targets:
            sent, fields = admin_page_form(client, url)
            for key, value in typed.items():
                sent[key] = [value() if callable(value) else value]
            sent["_save"] = ["Save"]
            # The form as typed is valid: a refusal below is the hostile value's doing.
            rows = model.objects.count()
            baseline = client.post(url, sent)
            assert baseline.status_code == 302, _form_errors(baseline)
            if form_kind == "add":
                model.objects.exclude(pk__in=model.objects.order_by("pk").values("pk")[:rows]).delete()
            for field_name, field in fields.items():
                for value in hostile_values_for(field_name, field):
                    before, counts = outside.fingerprint(), model.objects.count()
                    response = client.post(url, with_value(sent, field_name, value))
                    refused = response.status_code == 200 and bool(_form_errors(response))
                    clean = response.status_code < 500 and b"Traceback" not in response.content
                    stored = model.objects.count() != counts or (
                        form_kind == "change" and _stored_value(model, sample.pk, field_name) == value
                    )
                    tally(
                        f"admin-{form_kind}",
                        f"{case.model}.{field_name}={value}",
                        rejected=clean and refused and not stored and not errored_operations(),
                        touched=outside.touched(before),
                        detail=f"{response.status_code} stored={stored} {_form_errors(response)[:200]}",
                    )
                    if stored and form_kind == "add":
                        model.objects.exclude(pk__in=model.objects.order_by("pk").values("pk")[:counts]).delete()
    tally.check()


def _superuser_request(user):
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = user
    return request


def _form_errors(response) -> str:
    context = response.context or {}
    errors = context.get("errors") if hasattr(context, "get") else None
    adminform = context.get("adminform") if hasattr(context, "get") else None
    text = []
    if adminform is not None:
        text += [f"{k}: {' '.join(v)}" for k, v in adminform.form.errors.items()]
    if errors:
        text += [str(error) for error in errors if str(error) not in text]
    return "; ".join(text)


def _stored_value(model, pk, field_name: str):
    try:
        return getattr(model.objects.get(pk=pk), field_name, None)
    except model.DoesNotExist:
        return None


BAD_ACTION_IDS = ["../etc", "a\x00b", "x" * 300, "-1", "999999999", "9" * 30, "", "1 OR 1=1", "1e9", "\uff11"]


def test_admin_actions_refuse_bad_ids(client, staff_user, outside, tally, tmp_path):
    client.force_login(staff_user)
    # Rows a careless action could reach although the ids name none of them.
    for case in admin_cases(tmp_path):
        case.sample()
    Pod.objects.create(pod_id="kept-pod", host=host_default(), image="x", status=Pod.Status.STOPPED)
    for label, model_admin in admin_registry().items():
        app, name = label.split(".")
        url = reverse(f"admin:{app}_{name}_changelist")
        actions = list(model_admin.get_actions(_superuser_request(staff_user)))
        for action in actions + ["../no-such-action"]:
            for bad in BAD_ACTION_IDS:
                # An action on the whole volume (sync) may queue work; none may touch this
                # model's rows when the ids name none of them.
                before, rows = outside.fingerprint(), list(model_admin.model.objects.values_list("pk", flat=True))
                response = client.post(url, {"action": action, "_selected_action": [bad], "index": "0"})
                clean = response.status_code in {200, 302, 400, 403, 404} and b"Traceback" not in response.content
                unchanged = list(model_admin.model.objects.values_list("pk", flat=True)) == rows
                tally(
                    "admin-action",
                    f"{label}:{action}[{bad}]",
                    rejected=clean and unchanged and not errored_operations(),
                    touched=outside.touched(before),
                    detail=str(response.status_code),
                )
    tally.check()


# -- (g) a Modal volume that does not exist ------------------------------------------------------


@pytest.mark.modal
def test_a_modal_volume_that_does_not_exist_is_a_clear_error_and_is_never_created(
    client, staff_user, modal_server, outside, tally, settings
):
    missing = "modal://no-such-volume-sweep?environment=main"
    # Registered while it existed, deleted on Modal since.
    Volume.objects.create(name="gone-modal", url=missing)
    volumes_before = set(modal_server._volumes)
    client, token = csrf_client(client, staff_user)

    def attempt(label: str, run) -> None:
        before, errored = outside.fingerprint(), len(errored_operations())
        clear, detail = run()
        problems = [] if clear else [detail]
        problems += errored_operations()[errored:]
        tally(
            "modal-missing", label, rejected=not problems, touched=outside.touched(before), detail="; ".join(problems)
        )

    def cli(*args):
        def run():
            error, output = run_cli(*args)
            return bool(error) and clear_message(error), f"answered {error!r} {output[:100]!r}"

        return run

    attempt("volumes inspect", cli("volumes", "inspect", "gone-modal"))
    attempt("volumes crosscheck", cli("volumes", "crosscheck", "gone-modal", "data", "s3://bucket/prefix"))
    attempt("volumes add", cli("volumes", "add", "new-modal", missing))

    def inspect_page():
        client.cookies.pop("messages", None)
        response = client.post(reverse("volumes:inspect", args=["gone-modal"]), {"csrfmiddlewaretoken": token})
        operation = Operation.objects.order_by("-pk").first()
        if response.status_code == 302 and operation is not None and operation.status == Operation.Status.PENDING:
            operation = execute(operation.pk)
        said = messages_of(response) + ([operation.error] if operation is not None else [])
        ok = response.status_code in {302, 400, 404, 409, 503} and any(m and clear_message(m) for m in said)
        return ok and "no-such-volume-sweep" in " ".join(said), f"{response.status_code} {said}"

    attempt("volume page: inspect now", inspect_page)

    def detail_page():
        response = client.get(reverse("volumes:detail", args=["gone-modal"]))
        return response.status_code == 200 and b"Traceback" not in response.content, str(response.status_code)

    attempt("volume page", detail_page)

    def admin_add():
        sent, _ = admin_page_form(client, reverse("admin:volumes_volume_add"))
        sent.update({"name": ["new-modal"], "url": [missing], "_save": ["Save"]})
        response = client.post(reverse("admin:volumes_volume_add"), sent)
        errors = _form_errors(response)
        ok = response.status_code == 200 and "no-such-volume-sweep" in errors
        return ok and not Volume.objects.filter(name="new-modal").exists(), f"{response.status_code} {errors}"

    attempt("admin add form", admin_add)

    settings.SESSIONS_VOLUME_URL = missing
    for args in [
        ("sessions", "sync"),
        ("sessions", "cleanup", "--policy", "download"),
        ("sessions", "cleanup", "--policy", "exit", "--dry-run"),
        ("sessions", "cleanup", "--policy", "manual", "--session", "abc"),
    ]:
        attempt(f"{' '.join(args)} on a missing sessions volume", cli(*args))

    assert set(modal_server._volumes) == volumes_before, "a Modal volume was created"
    assert not modal_server.removals()
    tally.check()


# -- (h) NUL bytes in list filters, on PostgreSQL --------------------------------------------------

# PostgreSQL refuses NUL in any text it is sent (SQLite stores it), so a filter that passes one
# on fails there only: these pages are met over HTTP on a real server on PostgreSQL.
NUL_VALUES = ["a\x00b", "\x00", "x\x00" * 50]
# Every filter the panel's list pages read; a page ignores those it does not know.
LIST_PARAMS = [
    "state",
    "session",
    "expired",
    "stalled",
    "problem",
    "status",
    "action",
    "target_type",
    "target_id",
    "outcome",
    "actor_name",
    "page",
    "q",
]


def admin_filter_params(model_admin) -> list[str]:
    """The query-string names the admin changelist's search and filters read."""
    from django.contrib import admin

    names = ["q"] if model_admin.search_fields else []
    for entry in model_admin.list_filter:
        if isinstance(entry, tuple):
            field, kind = entry
            names.append(f"{field}__isempty" if kind is admin.EmptyFieldListFilter else f"{field}__exact")
        elif isinstance(entry, str):
            field = model_admin.model._meta.get_field(entry.split("__")[0])
            names.append(f"{entry}__id__exact" if field.is_relation else f"{entry}__exact")
        else:
            names.append(entry.parameter_name)
    return names


@pytest.mark.postgres
@pytest.mark.redis
def test_nul_bytes_in_list_filters_on_postgresql(postgres_url, redis_url, tmp_path, tally):
    from tests.dashboard.test_login_race import PanelWeb
    from tests.scaleout.stack import PanelStack

    pages = [path for name, path, view, kwargs, _ in panel_urls() if not kwargs and name not in {"logout"}]
    admin_pages = [
        (reverse(f"admin:{label.replace('.', '_')}_changelist"), admin_filter_params(model_admin))
        for label, model_admin in admin_registry().items()
    ]
    assert {"/mixjobs/", "/audit/", "/sessions/"} <= set(pages)
    with PanelStack(postgres_url=postgres_url, redis_url=redis_url, var_dir=tmp_path / "stack") as stack:
        (tmp_path / "stack").mkdir(exist_ok=True)
        stack.shell(
            "from django.contrib.auth.models import User; "
            "User.objects.create_superuser(username='root', password='pw-root-123!')"
        )
        with PanelWeb(stack, log=tmp_path / "server.log") as web:
            browser = web.browser()
            assert browser.log_in("root", "pw-root-123!", token=browser.csrf()).status_code == 302

            def send(surface: str, path: str, params: dict[str, str], label: str) -> None:
                response = browser.get(web.url + path, params=params, allow_redirects=False, timeout=120)
                clean = response.status_code in {200, 302, 400, 401, 404, 405} and "Traceback" not in response.text
                tally(surface, label, rejected=clean, touched=0, detail=f"{path} answered {response.status_code}")

            for name, path, _, kwargs, text_args in id_urls():
                for arg in text_args:
                    hostile = path.replace(quote(str(kwargs[arg])), "a%00b", 1)
                    send("pg-path", hostile, {}, f"{name}[{arg}]=a\x00b")
            for value in NUL_VALUES:
                for path in pages:
                    send("pg-filter", path, dict.fromkeys(LIST_PARAMS, value), f"{path}?…={value}")
                for path, params in admin_pages:
                    for param in params:
                        send("pg-admin-filter", path, {param: value}, f"{path}?{param}={value}")
            assert web.server_errors() == [], web.server_errors()[:10]
    tally.check()


# -- (i) no test can hang ------------------------------------------------------------------------


def test_a_test_that_blocks_on_a_fifo_fails_at_its_timeout_instead_of_hanging(tmp_path):
    """pytest-timeout bounds every test (pyproject.toml); a test stuck in `open()` on a FIFO
    with no writer (issue #15's hang) is failed by the signal and the run goes on."""
    base = Path(settings.BASE_DIR)
    options = tomllib.loads((base / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert options["timeout_method"] == "signal"
    assert 0 < options["timeout"] <= 600
    fifo = tmp_path / "job.json"
    os.mkfifo(fifo)
    hanging = tmp_path / "test_hangs.py"
    hanging.write_text(f"def test_opens_a_fifo():\n    open({str(fifo)!r}).read()\n\n\ndef test_after():\n    pass\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(base / "pyproject.toml"), "--rootdir", str(base)]
        + ["-p", "no:cacheprovider", "-o", "timeout=2", str(hanging)],
        cwd=base,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Timeout (>2.0s)" in result.stdout
    assert "1 failed, 1 passed" in result.stdout
