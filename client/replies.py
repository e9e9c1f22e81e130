"""The one place that builds what leaves a site.

Only three things ever do: the model arrays after DP training, scalar
metrics, and a tiny ConfigRecord naming the site and its fedscan version.
No pixel data, patient identifiers or file paths: every value here is a
number or one of the two strings below. Audit this file, not the handlers.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from fedscan import __version__
from fedscan.common.compat import VERSION_KEY
from fedscan.common.errors import FedscanError, reply_code

SITE_RECORD = "site"


def _site_record(site_name: str) -> ConfigRecord:
    return ConfigRecord({"name": site_name, VERSION_KEY: __version__})


def _scalars(metrics: dict[str, float]) -> MetricRecord:
    # Only finite-or-NaN floats and ints: anything else is a programming error.
    record = {}
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"Metric {key!r} is not a scalar number.")
        record[key] = int(value) if key == "num-examples" else float(value)
    return MetricRecord(record)


def train_reply(msg: Message, arrays: ArrayRecord, metrics: dict[str, float], site_name: str) -> Message:
    content = RecordDict({"arrays": arrays, "metrics": _scalars(metrics),
                          SITE_RECORD: _site_record(site_name)})
    return Message(content=content, reply_to=msg)


def evaluate_reply(msg: Message, metrics: dict[str, float], site_name: str) -> Message:
    content = RecordDict({"metrics": _scalars(metrics), SITE_RECORD: _site_record(site_name)})
    return Message(content=content, reply_to=msg)


def error_reply(msg: Message, error: FedscanError) -> Message:
    """A coded refusal. The reason is the exception text, which fedscan writes without
    paths or patient data (see fedscan.common.errors)."""
    return Message(error=Error(code=reply_code(error), reason=f"{error.code}: {error}"), reply_to=msg)
