"""Log lines as JSON, one object a line (CONTACTGATE_LOG_FORMAT=json, the default of `serve`): the
time, level, logger and message, and whatever structured fields the line carries — above all the
``request_id`` that is also the exchange's audit entry's and its answer's ``X-Request-Id``, so one
exchange can be followed from the access log to the audit trail and back."""

from __future__ import annotations

import datetime as dt
import json
import logging

# Attributes every LogRecord has: anything else on a record came in ``extra`` and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def use_json(*loggers: logging.Logger) -> None:
    """Every handler of these loggers writes JSON lines."""
    formatter = JsonLines()
    for logger in loggers:
        for handler in logger.handlers:
            handler.setFormatter(formatter)
