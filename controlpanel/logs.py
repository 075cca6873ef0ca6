"""Log lines for people (`LOG_FORMAT=plain`, the default) or for machines (`LOG_FORMAT=json`:
one JSON object a line). Every line logged while an operation runs carries its id and kind,
in either format, so a grep or a log query finds all of one operation's lines."""

import json
import logging
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

_current: ContextVar[tuple[int, str] | None] = ContextVar("panel_operation", default=None)


@contextmanager
def operation_context(operation_id: int, kind: str):
    """Tag every log line written inside the block with this operation."""
    token = _current.set((operation_id, kind))
    try:
        yield
    finally:
        _current.reset(token)


class OperationFilter(logging.Filter):
    """Adds `operation_id` and `operation_kind` to each record (None outside operations)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _current.get()
        record.operation_id, record.operation_kind = current if current else (None, None)
        return True


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if getattr(record, "operation_id", None) is not None:
            line = f"{line} [operation #{record.operation_id} {record.operation_kind}]"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "operation_id", None) is not None:
            entry["operation_id"] = record.operation_id
            entry["operation_kind"] = record.operation_kind
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
