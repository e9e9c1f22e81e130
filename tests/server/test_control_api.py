"""The control-API façade against stand-ins on loopback: each failure maps to the FedscanError
that says what to do, fast, and what Flower sends is read as Flower's own client reads it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fedscan.common.certs import init_ca
from fedscan.common.errors import FedscanError
from fedscan.common.processes import free_port
from fedscan.server import control_api
from fedscan.server.control_api import ControlApi
from fedscan.server.coordinator_config import CoordinatorConfig
from fedscan.server.superlink import write_connection

FAST_S = 5.0  # every failure below is reported well within this


def coordinator(tmp_path: Path, port: int, *, ca: Path | None = None) -> CoordinatorConfig:
    """A coordinator whose recorded connection points at 127.0.0.1:port (TLS when ``ca``)."""
    config = CoordinatorConfig(state_dir=tmp_path / "state", control_address=f"127.0.0.1:{port}")
    if ca is not None:
        from fedscan.server.coordinator_config import TlsFiles

        config = CoordinatorConfig(
            state_dir=config.state_dir,
            control_address=config.control_address,
            tls=TlsFiles(ca, ca, ca),
        )
    write_connection(config, insecure=ca is None)
    return config


def refusal(call: object) -> FedscanError:
    started = time.monotonic()
    with pytest.raises(FedscanError) as caught:
        call()  # type: ignore[operator]
    assert time.monotonic() - started < FAST_S
    return caught.value


@pytest.fixture
def stand_in() -> Iterator[dict]:
    """An HTTP control API that answers every call with ``reply`` (status, content type, body)."""
    reply: dict = {"status": 200, "type": "application/protobuf", "body": b""}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("content-length", 0)))
            reply["path"], reply["headers"] = self.path, dict(self.headers)
            self.send_response(reply["status"])
            self.send_header("content-type", reply["type"])
            self.send_header("content-length", str(len(reply["body"])))
            self.end_headers()
            self.wfile.write(reply["body"])

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    reply["port"] = server.server_address[1]
    try:
        yield reply
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def silent() -> Iterator[tuple[int, bytes]]:
    """A TCP port that accepts and then says ``first`` (possibly nothing) and nothing more."""
    listener = socket.create_server(("127.0.0.1", 0))
    said: dict = {"first": b""}
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            held.append(connection)
            connection.sendall(said["first"])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], said  # type: ignore[misc]
    finally:
        listener.close()
        for connection in held:
            connection.close()


def test_a_coordinator_never_started_says_to_start_it(tmp_path: Path) -> None:
    config = CoordinatorConfig(state_dir=tmp_path / "state")
    error = refusal(lambda: ControlApi(config))
    assert error.code == control_api.NOT_RUNNING and "`fedscan server start`" in str(error)


def test_nothing_listening_is_not_running(tmp_path: Path) -> None:
    with ControlApi(coordinator(tmp_path, free_port())) as api:
        error = refusal(api.list_nodes)
    assert error.code == control_api.NOT_RUNNING
    assert "Nothing listens" in str(error) and "`fedscan server start`" in str(error)


def test_a_tls_failure_names_the_ca_and_the_certificate(tmp_path: Path, silent: tuple) -> None:
    port, said = silent
    said["first"] = b"HTTP/1.1 400 Bad Request\r\n\r\n"  # a plain-text server: no TLS handshake
    ca = init_ca(tmp_path / "ca").public
    with ControlApi(coordinator(tmp_path, port, ca=ca)) as api:
        error = refusal(api.list_nodes)
    assert error.code == control_api.TLS_FAILED
    assert str(ca) in str(error) and "fedscan certs server" in str(error)


def test_an_unreadable_ca_certificate_is_a_tls_problem(tmp_path: Path) -> None:
    error = refusal(lambda: ControlApi(coordinator(tmp_path, 1, ca=tmp_path / "missing.crt")))
    assert error.code == control_api.TLS_FAILED and "ca-certificate" in str(error)


def test_a_coordinator_that_never_answers_times_out(tmp_path: Path, silent: tuple) -> None:
    with ControlApi(coordinator(tmp_path, silent[0]), timeout_s=0.5) as api:
        error = refusal(api.list_nodes)
    assert error.code == control_api.NO_ANSWER and "within 0.5 s" in str(error)


def test_the_coordinators_refusal_is_quoted(tmp_path: Path, stand_in: dict) -> None:
    stand_in.update(
        status=412,
        type="application/json",
        body=b'{"code": 6, "detail": "Public key already in use."}',
    )
    with ControlApi(coordinator(tmp_path, stand_in["port"])) as api:
        error = refusal(lambda: api.register_node(b"PEM", "st-marys"))
    assert error.code == control_api.REFUSED
    assert str(error) == "The coordinator refused to register the site: Public key already in use."
    assert stand_in["path"] == "/v1/control/register-node"
    assert stand_in["headers"]["flwr-package-version"]  # Flower's version check sees who calls


def test_a_refusal_without_flowers_json_gives_the_http_status(
    tmp_path: Path, stand_in: dict
) -> None:
    stand_in.update(status=500, type="text/plain", body=b"boom")
    with ControlApi(coordinator(tmp_path, stand_in["port"])) as api:
        error = refusal(lambda: api.unregister_node(7))
    assert error.code == control_api.REFUSED and "HTTP 500" in str(error)


def test_a_runs_status_reads_status_and_sub_status(tmp_path: Path, stand_in: dict) -> None:
    from flwr.proto.control_pb2 import ListRunsResponse
    from flwr.proto.run_pb2 import Run, RunStatus

    finished = Run(run_id=5, status=RunStatus(status="finished", sub_status="completed"))
    stand_in["body"] = ListRunsResponse(run_dict={5: finished}).SerializeToString()
    with ControlApi(coordinator(tmp_path, stand_in["port"])) as api:
        assert api.run_status(5) == "finished:completed"
        assert api.run_status(6) == "unknown"


def test_a_log_is_its_first_streamed_message_exactly(tmp_path: Path, stand_in: dict) -> None:
    from flwr.proto.control_pb2 import StreamLogsResponse

    text = "INFO : Round 1 of 2\nINFO : Round 2 of 2\n"
    frames = [StreamLogsResponse(log_output=t).SerializeToString() for t in (text, "later\n")]
    stand_in["type"] = "application/flower-protobuf-stream"
    stand_in["body"] = b"".join(len(f).to_bytes(4, "big") + f for f in frames)
    with ControlApi(coordinator(tmp_path, stand_in["port"])) as api:
        assert api.run_log(3) == text
    assert stand_in["path"] == "/v1/control/stream-logs"


def test_a_log_stream_with_nothing_yet_is_an_empty_log_soon(tmp_path: Path, silent: tuple) -> None:
    port, said = silent
    said["first"] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"  # then nothing
    started = time.monotonic()
    with ControlApi(coordinator(tmp_path, port), timeout_s=0.5) as api:
        assert api.run_log(3) == ""
    assert time.monotonic() - started < FAST_S


def test_a_log_stream_that_never_answers_is_no_answer(tmp_path: Path, silent: tuple) -> None:
    with ControlApi(coordinator(tmp_path, silent[0]), timeout_s=0.5) as api:
        error = refusal(lambda: api.run_log(3))
    assert error.code == control_api.NO_ANSWER  # not an empty log: the coordinator is stuck


def test_an_ipv6_control_address_is_recorded_with_its_brackets(tmp_path: Path) -> None:
    import tomllib

    from fedscan.common.addresses import join_address, split_address

    config = CoordinatorConfig(state_dir=tmp_path / "state", control_address="[::1]:9093")
    write_connection(config, insecure=True)
    recorded = tomllib.loads((config.flwr_home / "config.toml").read_text())
    assert recorded["superlink"]["fedscan"]["address"] == "[::1]:9093"
    for address in ("[::1]:9093", "127.0.0.1:9092", "coordinator.example.org:9092"):
        assert join_address(*split_address(address)) == address
