"""Does the coordinator know this site's key? (``fedscan client check``)

One signed Fleet ``ActivateNode`` call with a heartbeat interval Flower never accepts (0 s; it takes
10-1800 s). Flower 1.39's SuperLink looks the key up first and answers FAILED_PRECONDITION for a key
it does not know; for a registered key it then rejects the interval with INVALID_ARGUMENT before it
changes anything (``flwr/server/superlink/fleet/message_handler/message_handler.py``,
``activate_node``). So the site learns which, and no node is activated, registered or marked
online. Invariant: the call carries only the site's public key and a signed timestamp, as every
SuperNode call does.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

PROBE_INTERVAL_S = 0.0  # below Flower's HEARTBEAT_MIN_INTERVAL (10 s): rejected, never stored


class Registration(enum.Enum):
    REGISTERED = "registered"
    UNKNOWN = "unknown"  # the coordinator has no such key: the operator has not added the site
    UNDETERMINED = "undetermined"  # another answer (an older or newer Flower, a network error)


@dataclass(frozen=True)
class Answer:
    registration: Registration
    detail: str  # the gRPC status and message, for UNDETERMINED


def registration(
    address: str, *, private_key: Path, ca_certificate: Path, timeout_s: float
) -> Answer:
    """Ask the coordinator at ``address`` whether the key in ``private_key`` is registered."""
    import grpc  # type: ignore[import-untyped]  # grpcio ships no type hints
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.client.grpc_rere_client.node_auth_client_interceptor import (
        NodeAuthClientInterceptor,
    )
    from flwr.proto.fleet_pb2 import ActivateNodeRequest
    from flwr.proto.fleet_pb2_grpc import FleetStub
    from flwr.supercore.grpc import create_channel
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    key = load_ssh_private_key(private_key.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return Answer(Registration.UNDETERMINED, "the site key is not an EC key")
    flower_log = logging.getLogger("flwr")
    level = flower_log.level
    flower_log.setLevel(max(level, logging.INFO))  # its "Opened secure gRPC connection" debug line
    try:
        channel = create_channel(
            server_address=address,
            insecure=False,
            root_certificates=ca_certificate.read_bytes(),
            interceptors=[NodeAuthClientInterceptor(key, key.public_key())],
        )
    finally:
        flower_log.setLevel(level)
    request = ActivateNodeRequest(
        public_key=public_key_to_bytes(key.public_key()), heartbeat_interval=PROBE_INTERVAL_S
    )
    try:
        FleetStub(channel).ActivateNode(request, timeout=timeout_s)
    except grpc.RpcError as exc:
        return _answer(exc.code(), exc.details() or "")
    finally:
        channel.close()
    # Accepting an interval of 0 s would mean a Flower other than the one this was written for.
    return Answer(Registration.UNDETERMINED, "the coordinator accepted an invalid heartbeat")


def _answer(code: object, details: str) -> Answer:
    """What a gRPC status (``grpc.StatusCode``) says of the key."""
    name = getattr(code, "name", "")
    if name == "INVALID_ARGUMENT":
        return Answer(Registration.REGISTERED, details)
    if name == "FAILED_PRECONDITION":
        return Answer(Registration.UNKNOWN, details)
    logger.debug("registration probe answered %s: %s", code, details)
    return Answer(Registration.UNDETERMINED, f"{code}: {details}")
