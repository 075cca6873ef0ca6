import os
import secrets
from pathlib import Path
from urllib.parse import unquote, urlparse

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from apps.audit.roles import roles_sync
from apps.audit.schedules import schedules_sync


class Command(BaseCommand):
    help = (
        "Make sure the admin account, the viewer/operator groups, the schedules and the default sessions folder exist."
    )

    def handle(self, *args, **options):
        roles_sync()
        schedules_sync()
        self._ensure_admin()
        self._ensure_default_sessions_folder()

    def _ensure_default_sessions_folder(self):
        """The default sessions volume is a folder under VAR_DIR: made here, so the first
        scheduled sync on a fresh machine finds it instead of failing. A volume configured
        anywhere else is never created: a missing mount must show as missing."""
        url = urlparse(settings.SESSIONS_VOLUME_URL)
        if url.scheme != "local":
            return
        root = Path(unquote(url.netloc + url.path)).resolve()
        if not root.is_relative_to(Path(settings.VAR_DIR).resolve()):
            return
        sessions = root / "sessions"
        if not sessions.is_dir():
            sessions.mkdir(parents=True, exist_ok=True)
            self.stdout.write(f"created the sessions folder {sessions}")

    def _ensure_admin(self):
        user_model = get_user_model()
        password_file = Path(settings.VAR_DIR) / "admin-password"
        if user_model.objects.filter(username="admin").exists():
            where = f" (password in {password_file})" if password_file.exists() else ""
            self.stdout.write(f"admin account exists{where}")
            return
        password = os.environ.get("ADMIN_PASSWORD")
        if not password:
            if password_file.exists():
                password = password_file.read_text().strip()
            else:
                password = secrets.token_urlsafe(16)
                fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(password + "\n")
        user_model.objects.create_superuser(username="admin", email="", password=password)
        if os.environ.get("ADMIN_PASSWORD"):
            self.stdout.write("created admin account with the password from ADMIN_PASSWORD")
        else:
            # Printed once, on the terminal of the person who ran `make run`; also kept 0600 in var/.
            self.stdout.write(f"created admin account: username admin, password {password} (saved in {password_file})")
