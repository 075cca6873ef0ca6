"""Telling people when something needs them, through Apprise (`NOTIFY_URLS`).

`notify(event=..., subject=..., title=..., body=...)` is the one way to send. The same event
about the same subject goes out at most once within NOTIFY_REPEAT_MINUTES; every attempt is
an audit event (`notify.sent` or `notify.failed`, the URLs never in it); a notifier that
fails, hangs or is misconfigured never fails the work that called it.
"""

import logging
import re
import threading
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.names import AuditAction, TargetType
from apps.audit.services import audit_record

logger = logging.getLogger(__name__)

NOTIFIER = "notifier"


def notify(*, event: str, subject: str, title: str, body: str, level: str = "warning") -> bool | None:
    """Send one notification. None when notifications are off or this one was sent recently;
    True when every URL took it; False when it failed (audited, logged, never raised)."""
    if not settings.NOTIFY_URLS:
        return None
    key = f"{event}:{subject}"[:255]
    since = timezone.now() - timedelta(minutes=settings.NOTIFY_REPEAT_MINUTES)
    recent = AuditEvent.objects.filter(
        action=AuditAction.NOTIFY_SENT, target_type=TargetType.NOTIFICATION, target_id=key, occurred_at__gte=since
    )
    if recent.exists():
        return None
    error = _send(title=title, body=body, level=level)
    audit_record(
        actor=NOTIFIER,
        action=AuditAction.NOTIFY_FAILED if error else AuditAction.NOTIFY_SENT,
        target_type=TargetType.NOTIFICATION,
        target_id=key,
        outcome=AuditEvent.Outcome.FAILED if error else AuditEvent.Outcome.SUCCEEDED,
        message=f"{title}: {error}" if error else title,
        details={"event": event, "subject": subject, "body": body[:2000]},
    )
    return not error


def _send(*, title: str, body: str, level: str) -> str:
    """Hand the message to Apprise on a thread with a deadline; "" when sent, else why not."""
    outcome: list[str] = []
    seconds = settings.NOTIFY_TIMEOUT_SECONDS

    def attempt() -> None:
        try:
            import apprise

            sender = apprise.Apprise()
            for url in settings.NOTIFY_URLS:
                if not sender.add(url):
                    outcome.append("a NOTIFY_URLS entry is not a URL Apprise understands")
                    return
            # Apprise's own socket timeouts (4 s) would otherwise decide, whatever the setting says;
            # with them set, its worker thread has ended by the time this send returns, so a CLI
            # that notified exits at once.
            for service in sender:
                service.socket_connect_timeout = service.socket_read_timeout = float(seconds)
            kind = {"info": apprise.NotifyType.INFO, "failure": apprise.NotifyType.FAILURE}.get(
                level, apprise.NotifyType.WARNING
            )
            with apprise.LogCapture(level=apprise.logging.DEBUG) as log:
                sent = sender.notify(title=title, body=body, notify_type=kind)
            outcome.append("" if sent else _why_not_sent(log.getvalue(), seconds))
        except Exception as exc:  # a broken notifier must never break the work that called it
            logger.warning("notification %r not sent: %s", title, type(exc).__name__)
            outcome.append(f"{type(exc).__name__} while sending")

    sender_thread = threading.Thread(target=attempt, name="notify", daemon=True)
    sender_thread.start()
    # A connection attempt and a read may each take the whole timeout; past both, give up on it.
    sender_thread.join(2 * seconds + 1)
    if sender_thread.is_alive():
        return f"no answer within {seconds} s"
    error = outcome[0] if outcome else "nothing was sent"
    if error:
        logger.warning("notification %r not sent: %s", title, error)
    return error


def _why_not_sent(log: str, seconds: int) -> str:
    """What Apprise's log says happened, as a sentence (it only answers sent or not)."""
    if "timed out" in log:
        return f"no answer within {seconds} s"
    if "Connection refused" in log or "Failed to establish" in log or "Name or service not known" in log:
        return "the receiver could not be reached (connection refused or unknown host)"
    status = re.search(r"error=(\d{3})", log)
    if status:
        return f"the receiver answered HTTP {status.group(1)}"
    return "a receiver did not take it"
