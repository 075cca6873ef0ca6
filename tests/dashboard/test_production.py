"""The README's production block, run as written: gunicorn with DEBUG=0 behind a client that
sets the headers a TLS proxy sets, serving login, hashed static files, the panel's 404, 403
and 500, and /healthz.

Only the site's own values are swapped for this machine's (the key file, VAR_DIR, the
database and Redis, the port); every other word of the block is what runs."""

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from controlpanel.static_manifest import static_manifest_check
from tests.dashboard.test_runpanel import processes_with
from tests.parts import BASE_IMAGE, docker_client_or_none, ensure_base_image, free_port, wait_for_port

README = Path(settings.BASE_DIR) / "README.md"
MARKER = "<!-- production block:"
# The commands that keep running; every other command of the block must end with status 0.
SERVERS = ("gunicorn ", "python manage.py qcluster")
README_PORT = "127.0.0.1:8000"
NAVIGATION = 'aria-label="Main"'
HASHED = re.compile(r"\.[0-9a-f]{12}\.")


def production_block() -> list[str]:
    """The lines of the fenced block after the marker, each without its trailing comment."""
    text = README.read_text()
    assert text.count(MARKER) == 1, f"README.md needs exactly one {MARKER!r} comment"
    after = text[text.index(MARKER) :].split("```sh\n", 1)[1]
    lines = []
    for line in after.split("\n```", 1)[0].splitlines():
        command = re.sub(r"\s+#.*$", "", line).strip()
        if command and not command.startswith("#"):
            lines.append(command)
    return lines


def with_site_values(line: str, site: dict[str, str], used: set[str]) -> str:
    """An `export A=x B=y` line with this machine's value for each name in `site`."""
    words = line.split()
    assert words[0] == "export" and all("=" in word for word in words[1:]), line
    exported = []
    for word in words[1:]:
        name, _, value = word.partition("=")
        if name in site:
            used.add(name)
            value = site[name]
        exported.append(f"{name}={value}")
    return "export " + " ".join(exported)


def clean_env() -> dict[str, str]:
    # Nothing of the test run's own configuration leaks into the deployment.
    dropped = ("DJANGO_", "PYTEST", "DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "VAR_DIR")
    env = {key: value for key, value in os.environ.items() if not key.startswith(dropped)}
    env.pop("TRUST_X_FORWARDED_PROTO", None)
    env.pop("CSRF_TRUSTED_ORIGINS", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `python`, `gunicorn`
    env["Q_WORKERS"] = "1"  # the machine is small and shared
    # The worker runs the schedules against the shared dockerd: never sweep another run's volumes.
    env["POD_ORPHAN_GRACE_MINUTES"] = str(10**8)
    # /healthz runs a container of the pod image on the Docker host: the tests' image.
    env["POD_IMAGE"] = BASE_IMAGE
    return env


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    text: str
    cookies: SimpleCookie


@dataclass
class Client:
    """A browser behind the TLS proxy: the proxy's headers on each request, cookies kept.

    It connects from 127.0.0.2, a proxy that is not at 127.0.0.1: gunicorn alone believes
    X-Forwarded-Proto only from 127.0.0.1 (its forwarded_allow_ips), so the panel must
    believe it by its own setting, as it must for a proxy on another machine."""

    port: int
    host: str
    source: str = "127.0.0.2"
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, *, form: dict | None = None, proxied: bool = True) -> Answer:
        headers = {"Host": self.host}
        if proxied:
            headers["X-Forwarded-Proto"] = "https"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            # What a browser sends with a form posted on an https page.
            headers["Origin"] = f"https://{self.host}"
            headers["Referer"] = f"https://{self.host}{path}"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30, source_address=(self.source, 0))
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            text = response.read().decode(errors="replace")
        finally:
            connection.close()
        cookies = SimpleCookie()
        for header in response.headers.get_all("Set-Cookie") or []:
            cookies.load(header)
        for name, morsel in cookies.items():
            self.cookies[name] = morsel.value
        return Answer(response.status, response.headers, text, cookies)

    def log_in(self, username: str, password: str) -> Answer:
        page = self.request("GET", "/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        return self.request(
            "POST", "/login/", form={"username": username, "password": password, "csrfmiddlewaretoken": token}
        )


def stop(process: subprocess.Popen) -> None:
    """Terminate the server's process group, then kill what is left."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def assert_panel_page(answer: Answer, status: int, heading: str) -> None:
    assert answer.status == status, answer.text[:2000]
    assert f"<h1>{heading}</h1>" in answer.text and NAVIGATION in answer.text
    assert "Traceback" not in answer.text and "A server error occurred" not in answer.text


def test_the_readme_production_block_serves_the_panel_behind_a_tls_proxy(tmp_path):
    key_file = tmp_path / "panel-key"
    key_file.write_text(uuid.uuid4().hex * 2 + "\n")
    key_file.chmod(0o600)
    db = tmp_path / "panel.sqlite3"
    site = {
        "SECRET_KEY_FILE": str(key_file),
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{db}",
        "REDIS_URL": "",  # the database is the queue, as on one machine
    }
    port, used = free_port(), set()
    exports, commands, servers = [], [], []
    for line in production_block():
        if line.startswith("export "):
            exports.append(with_site_values(line, site, used))
        elif line.startswith(SERVERS):
            servers.append(line.replace(README_PORT, f"127.0.0.1:{port}"))
        else:
            commands.append(line)
    assert used == set(site), f"the block no longer sets {set(site) - used}: update this test with it"
    assert sum(line.startswith("gunicorn ") for line in servers) == 1 and f"127.0.0.1:{port}" in servers[0]
    # The environment the block's exports make, read back from the shell that made it.
    shell = subprocess.run(
        ["bash", "-c", "\n".join([*exports, "env -0"])], env=clean_env(), capture_output=True, check=True
    )
    env = dict(entry.split("=", 1) for entry in shell.stdout.decode().split("\0") if "=" in entry)
    host = env["ALLOWED_HOSTS"].split(",")[0]

    def run(command: str) -> str:
        result = subprocess.run(
            ["bash", "-c", command], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=240
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    for command in commands:
        run(command)
    admin_password = (Path(env["VAR_DIR"]) / "admin-password").read_text().strip()
    run(
        'python manage.py shell -c "from django.contrib.auth.models import Group, User; '
        "User.objects.create_user('viewer', password='viewer-Password-1', is_staff=True)"
        ".groups.add(Group.objects.get(name='viewer'))\""
    )

    started, logs = [], []
    try:
        for number, line in enumerate(servers):
            logs.append(tmp_path / f"server-{number}.log")
            with open(logs[-1], "w") as out:
                started.append(
                    subprocess.Popen(
                        ["bash", "-c", f"exec {line}"],
                        cwd=settings.BASE_DIR,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        web = started[0]
        assert wait_for_port(port, timeout=60, process=web), logs[0].read_text()

        browser = Client(port, host)
        try:
            login = browser.request("GET", "/login/")
        except OSError as exc:  # the worker did not boot: its log says why
            pytest.fail(f"{exc}\n{logs[0].read_text()[-3000:]}")
        assert login.status == 200, login.text[:2000] + logs[0].read_text()[-3000:]
        assert 'name="username"' in login.text and 'name="password"' in login.text
        assert login.cookies["csrftoken"]["secure"], "the CSRF cookie must be Secure behind TLS"
        assert "max-age" in login.headers["Strict-Transport-Security"]

        # Every static file the login page links, by its hashed name, cached for good.
        linked = re.findall(r'(?:href|src)="(/static/[^"]+)"', login.text)
        assert {"favicon", "panel", "htmx"} <= {Path(url).name.split(".")[0] for url in linked}, linked
        for url in linked:
            assert HASHED.search(url), f"{url} is not a hashed name"
            answer = browser.request("GET", url)
            assert answer.status == 200, url
            assert "immutable" in answer.headers["Cache-Control"], url
        stylesheet = next(url for url in linked if url.endswith(".css"))
        assert browser.request("GET", stylesheet).headers["Content-Type"].startswith("text/css")

        signed_in = browser.log_in("admin", admin_password)
        assert signed_in.status == 302 and signed_in.headers["Location"] == "/", signed_in.text[:2000]
        assert signed_in.cookies["sessionid"]["secure"] and signed_in.cookies["sessionid"]["httponly"]
        assert_panel_page(browser.request("GET", "/"), 200, "Overview")
        assert_panel_page(browser.request("GET", "/no-such-page/"), 404, "Not found")

        viewer = Client(port, host)
        assert viewer.log_in("viewer", "viewer-Password-1").status == 302
        refused = viewer.request("POST", "/mixjobs/sync/", form={"csrfmiddlewaretoken": viewer.cookies["csrftoken"]})
        assert_panel_page(refused, 403, "Not allowed")

        # A probe asks gunicorn directly, over plain HTTP: an answer, not a redirect to https.
        probe = Client(port, host)
        expected = {"database", "cache and broker", "snapshot store", "worker"}
        docker_client = docker_client_or_none()
        if docker_client is not None:
            ensure_base_image(docker_client)
            expected.add("docker host local")
        deadline = time.monotonic() + 90
        while True:
            health = probe.request("GET", "/healthz", proxied=False)
            assert health.status in {200, 503}, f"{health.status} {health.headers.get('Location')}"
            checks = json.loads(health.text)["checks"]
            if all(checks.get(name, {}).get("ok") for name in expected) or time.monotonic() > deadline:
                break
            time.sleep(1)  # the worker reports once it has started
        assert {name for name in expected if checks.get(name, {}).get("ok")} == expected, checks
        all_ok = all(check["ok"] for check in checks.values())
        assert health.status == (200 if all_ok else 503), checks

        # A fault no page expects: the database file gone. The panel's 500, the traceback in the log.
        db.rename(tmp_path / "panel.sqlite3.gone")
        broken = browser.request("GET", "/")
        assert_panel_page(broken, 500, "Something broke")
        assert "no such table" not in broken.text
        assert "no such table" in logs[0].read_text()
    finally:
        for process in started:
            stop(process)
        left = processes_with(f"VAR_DIR={env['VAR_DIR']}")
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert left == [], "a server process outlived its group's SIGTERM and SIGKILL"


def test_the_web_server_refuses_to_start_without_collected_static_files(tmp_path):
    key_file = tmp_path / "panel-key"
    key_file.write_text(uuid.uuid4().hex * 2)
    env = {**clean_env(), "DEBUG": "0", "SECRET_KEY_FILE": str(key_file), "VAR_DIR": str(tmp_path / "var")}
    result = subprocess.run(
        [sys.executable, "-c", "import controlpanel.wsgi"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert "static files are not collected" in last_line and "collectstatic --noinput" in last_line


def test_a_static_file_newer_than_the_collected_ones_stops_the_start(tmp_path, settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
    }
    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", "--noinput", verbosity=0)
    settings.STATIC_ROOT = tmp_path  # a fresh storage reads the manifest just written
    static_manifest_check()
    manifest = tmp_path / "staticfiles.json"
    written = json.loads(manifest.read_text())
    del written["paths"]["favicon.svg"]  # as if favicon.svg came with this version
    manifest.write_text(json.dumps(written))
    settings.STATIC_ROOT = tmp_path
    with pytest.raises(ImproperlyConfigured, match=r"1 static file\(s\) are missing .* e\.g\. favicon\.svg"):
        static_manifest_check()
