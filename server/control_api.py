"""This coordinator's Flower control API, spoken in-process: the operator's commands need no
``flwr`` subprocess.

``with ControlApi(config) as api: api.list_nodes()`` — one HTTP client, so one TLS connection,
per command. Invariants:

- **Where**: the address and TLS mode are those ``fedscan server start`` recorded in
  ``STATE/flwr-home/config.toml`` (:func:`fedscan.server.superlink.write_connection`), so a
  coordinator started with ``--insecure`` is reached in plain HTTP and every other one only over
  TLS verified against the federation's CA.
- **Bounded**: every call gives up after :data:`CALL_TIMEOUT_S` (connect, send, each read). Flower
  streams a run's log until the run ends and leaves the stream's reads unbounded; here only its
  first message (the whole log so far) is read, and each read waits at most :data:`LOG_READ_S`.
- **No retries**: a failed call raises a :class:`~fedscan.common.errors.FedscanError` at once whose
  ``code`` says which failure it was — :data:`NOT_RUNNING` (nothing listens),
  :data:`TLS_FAILED` (the handshake or the certificate), :data:`NO_ANSWER` (a timeout),
  :data:`REFUSED` (the coordinator answered with an error: its message is quoted). Callers that
  ride out hiccups count their own retries (``server/follow.py``).
- **Lean**: Flower is imported when a ControlApi is made, never at import. That costs ≈ 0.6 CPU s
  (``import flwr``: its package root imports the app framework; the control client adds little),
  against 1.3-1.5 CPU s for each ``flwr`` subprocess it replaces (2 cores,
  ``bench/operator_commands.py``).
"""

from __future__ import annotations

import ssl
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fedscan.common.errors import FedscanError
from fedscan.server.coordinator_config import CoordinatorConfig
from fedscan.server.superlink import DEPLOYMENT_CONNECTION

if TYPE_CHECKING:
    import httpx
    from flwr.supercore.control import ControlHttpClient
    from flwr.supercore.protobuf.client import ProtobufCall, ProtobufRequestContext

# A loopback call answers in milliseconds; the SuperLink may hold one behind a busy SQLite write
# for a few seconds on a loaded machine (seen: 5 s at load 11-14, server/superlink_launcher.py).
CALL_TIMEOUT_S = 20.0
LOG_READ_S = 5.0  # a running run's log stream that sends nothing this long has nothing yet

NOT_RUNNING = "coordinator-not-running"
TLS_FAILED = "control-tls-failed"
NO_ANSWER = "coordinator-no-answer"
REFUSED = "coordinator-refused"

_START_HINT = "is `fedscan server start` running on this machine, with this coordinator.toml?"


@dataclass(frozen=True)
class Node:
    """A site as Flower's SuperLink sees it."""

    node_id: int
    status: str  # registered, online, offline or unregistered
    online_at: str  # when it last came online ("YYYY-MM-DD HH:MM:SSZ"), or "N/A"


@dataclass(frozen=True)
class Connection:
    """How to reach the control API, as ``fedscan server start`` recorded it."""

    address: str  # host:port
    insecure: bool  # plain HTTP: the coordinator runs --insecure
    ca_certificate: str  # the CA its certificate is checked against ("": the system's)


def read_connection(config: CoordinatorConfig) -> Connection:
    """The connection ``fedscan server start`` wrote to ``STATE/flwr-home/config.toml``."""
    path = config.flwr_home / "config.toml"
    try:
        entry = tomllib.loads(path.read_text())["superlink"][DEPLOYMENT_CONNECTION]
        address = str(entry["address"])
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        raise FedscanError(
            f"{path} does not say where the coordinator listens; `fedscan server start` writes "
            f"it when it starts: {_START_HINT}",
            code=NOT_RUNNING,
        ) from None
    insecure = bool(entry.get("insecure", False))
    return Connection(address, insecure, str(entry.get("root-certificates", "")))


class ControlApi:
    """One client of the coordinator's control API (see the module docstring); close it, or use
    it as a context manager."""

    def __init__(self, config: CoordinatorConfig, *, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.connection = read_connection(config)
        self.timeout_s = timeout_s
        self._bounds = _Bounds(min(LOG_READ_S, timeout_s))
        self._client = _client(self.connection, self._bounds, timeout_s)

    def __enter__(self) -> ControlApi:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def register_node(self, public_key_pem: bytes, name: str) -> int:
        """Register a site's public key (PEM, SubjectPublicKeyInfo); the node id Flower gave it."""
        from flwr.proto.control_pb2 import RegisterNodeRequest

        request = RegisterNodeRequest(public_key=public_key_pem, name=name)
        with self._translated("to register the site"):
            node_id = int(self._client.RegisterNode(request).node_id)
        if not node_id:
            raise FedscanError("The coordinator gave the site no node id.", code=REFUSED)
        return node_id

    def unregister_node(self, node_id: int) -> None:
        from flwr.proto.control_pb2 import UnregisterNodeRequest

        with self._translated(f"to unregister node {node_id}"):
            self._client.UnregisterNode(UnregisterNodeRequest(node_id=node_id))

    def list_nodes(self) -> list[Node]:
        from flwr.proto.control_pb2 import ListNodesRequest

        with self._translated("to list the sites"):
            nodes = self._client.ListNodes(ListNodesRequest()).nodes_info
        return [Node(n.node_id, n.status, _utc(n.last_activated_at)) for n in nodes]

    def run_status(self, flower_run_id: int) -> str:
        """Flower's status of one run, e.g. ``running`` or ``finished:completed``."""
        from flwr.proto.control_pb2 import ListRunsRequest

        with self._translated(f"to show Flower run {flower_run_id}"):
            runs = self._client.ListRuns(ListRunsRequest(run_id=flower_run_id)).run_dict
        if flower_run_id not in runs:
            return "unknown"
        status = runs[flower_run_id].status
        return f"{status.status}:{status.sub_status}" if status.sub_status else status.status

    def run_log(self, flower_run_id: int) -> str:
        """The ServerApp's log of one run so far, as Flower stores it ("" if it has none yet)."""
        import httpx
        from flwr.proto.control_pb2 import StreamLogsRequest

        request = StreamLogsRequest(run_id=flower_run_id, after_timestamp=0.0)
        stream, self._bounds.answered = self._client.StreamLogs(request), False
        with self._translated(f"for the log of Flower run {flower_run_id}"):
            try:  # the first message holds every record stored so far; the rest wait for new ones
                return next(stream).log_output
            except StopIteration:  # a finished run without a log
                return ""
            except httpx.ReadTimeout:
                if not self._bounds.answered:
                    raise  # no answer at all: the coordinator is stuck
                return ""  # it answered, with nothing within LOG_READ_S: no record yet
            finally:
                stream.close()

    def _translated(self, what: str) -> _Translated:
        return _Translated(self.connection, what, self.timeout_s)


@dataclass
class _Translated:
    """Turns httpx's and Flower's errors of one call into a FedscanError saying what to do."""

    connection: Connection
    what: str
    timeout_s: float

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: Any, _: object) -> None:
        import httpx

        if isinstance(error, httpx.HTTPError | ValueError):
            raise translate(error, self.connection, self.what, self.timeout_s) from None


def translate(
    error: Exception, connection: Connection, what: str, timeout_s: float
) -> FedscanError:
    """The FedscanError for a failed control-API call ``what`` (e.g. "to list the sites")."""
    import httpx

    where = f"the coordinator's control API at {connection.address}"
    if isinstance(error, httpx.HTTPStatusError):
        return FedscanError(
            f"The coordinator refused {what}: {_refusal(error.response)}", code=REFUSED
        )
    if isinstance(error, httpx.TimeoutException):
        return FedscanError(
            f"No answer from {where} {what} within {timeout_s:g} s: it is running but busy or "
            "stuck; try again, and see the coordinator's own output.",
            code=NO_ANSWER,
        )
    causes = list(_causes(error))
    if tls := next((c for c in causes if isinstance(c, ssl.SSLError)), None):
        return FedscanError(
            f"The TLS handshake with {where} failed ({tls}): {connection.ca_certificate} must be "
            "the CA that signed the coordinator's certificate, and the certificate must cover "
            f"{connection.address.rsplit(':', 1)[0]} (`fedscan certs server --help`).",
            code=TLS_FAILED,
        )
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return FedscanError(f"Nothing listens on {where}: {_START_HINT}", code=NOT_RUNNING)
    return FedscanError(
        f"Could not talk to {where} {what} ({type(error).__name__}: {error}): {_START_HINT}",
        code=NOT_RUNNING if isinstance(error, httpx.ConnectError) else REFUSED,
    )


def _refusal(response: httpx.Response) -> str:
    """The coordinator's own words: Flower's error JSON (``detail``, ``extra``) or the status."""
    from flwr.supercore.error import FlowerError

    if error := FlowerError.from_json(response.text):
        return " ".join([error.message, *([error.public_details] if error.public_details else [])])
    try:  # FastAPI's own refusals (e.g. 401) carry only a "detail"
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    status = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    return f"{detail} ({status})" if isinstance(detail, str) else status


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what it was raised from (httpx wraps httpcore, which wraps the OS's error)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _utc(stamp: str | None) -> str:
    """Flower's ISO timestamp as ``YYYY-MM-DD HH:MM:SSZ`` (what ``flwr supernode list`` shows)."""
    if not stamp:
        return "N/A"
    moment = datetime.fromisoformat(stamp).astimezone(UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z").replace("T", " ")


class _Bounds:
    """Flower's runtime-version headers on every call (the SuperLink refuses another major.minor),
    and a bound on each read of a stream (Flower clears it once the response has started)."""

    def __init__(self, stream_read_s: float) -> None:
        from flwr.supercore.runtime_version_compatibility import RuntimeVersionMetadata

        self._headers = dict(RuntimeVersionMetadata.from_local_component("fedscan").as_metadata())
        self._stream_read_s = stream_read_s
        self.answered = False  # the last stream's response has started

    def intercept(self, context: ProtobufRequestContext, call_next: ProtobufCall) -> httpx.Response:
        context.request.headers.update(self._headers)
        response = call_next(context)
        # The same dict httpcore reads when the body's reads start, after this returns.
        timeout = context.request.extensions.get("timeout")
        if isinstance(timeout, dict) and timeout.get("read", 0) is None:
            timeout["read"], self.answered = self._stream_read_s, True
        return response


def _client(connection: Connection, bounds: _Bounds, timeout_s: float) -> ControlHttpClient:
    from flwr.supercore.control import ControlHttpClient

    verify: ssl.SSLContext | bool = False
    if not connection.insecure:
        try:
            verify = ssl.create_default_context(cafile=connection.ca_certificate or None)
        except (OSError, ssl.SSLError) as exc:
            raise FedscanError(
                f"Cannot load the coordinator's CA certificate {connection.ca_certificate} "
                f"({exc}); [tls] ca-certificate in coordinator.toml names it.",
                code=TLS_FAILED,
            ) from None
    scheme = "http" if connection.insecure else "https"
    return ControlHttpClient(
        f"{scheme}://{connection.address}",
        interceptors=[bounds],
        verify=verify,
        timeout=timeout_s,
    )
