"""The server's log output: plain text or one JSON object a line, to standard error or a file."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# Fields a log call may add with extra={...}; nothing else from a record is shipped, so a
# stray attribute can never carry a secret into the JSON.
FIELDS = ("cmd", "code", "ms", "reference")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC), level, logger, message, and any FIELDS given."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({name: getattr(record, name) for name in FIELDS if hasattr(record, name)})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str, log_format: str, log_file: str) -> None:
    """Send the log where the settings say, in the format they say; OSError if the file fails."""
    handler: logging.Handler = (
        logging.FileHandler(log_file, encoding="utf-8")
        if log_file
        else logging.StreamHandler(sys.stderr)
    )
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
