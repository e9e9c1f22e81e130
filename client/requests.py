"""A request from the coordinator, parsed once into a frozen object before any handler runs.

Invariant: handlers never read raw message keys. :meth:`SiteRequest.parse` checks the coordinator's
fedscan version first, then reads every key the request carries (:mod:`fedscan.common.protocol`) and
the run's settings (:class:`~fedscan.common.site_settings.SiteSettings`); a missing or invalid key
is a ConfigError, which the site answers with a coded refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import Message

from fedscan.common import protocol
from fedscan.common.errors import ConfigError
from fedscan.common.site_settings import SiteSettings
from fedscan.common.tasks import LabelScheme
from fedscan.common.values import parse_bool
from fedscan.common.version import check_compatible


@dataclass(frozen=True)
class SiteRequest:
    """Whose run, which round, which settings — and for evaluations, at which threshold."""

    run_id: str
    server_round: int
    settings: SiteSettings
    coordinator_version: str = ""  # the coordinator's fedscan (checked compatible)
    evaluate_first: bool = False  # a train request: score the received model before training on it
    threshold: float = (
        0.5  # an evaluation's operating threshold (the pooled Youden one, cross-site)
    )
    secagg_threshold: int = 0  # a secure-aggregation step: sites that must survive each stage

    @classmethod
    def parse(cls, msg: Message) -> SiteRequest:
        config = dict(msg.content.config_records[protocol.CONFIG])
        check_compatible(_text(config.get(protocol.VERSION)))
        return cls(
            # The coordinator's run id keys the ledger; a bare Flower run (no fedscan coordinator)
            # has its own.
            run_id=str(config.get(protocol.RUN_ID) or f"flower-run-{msg.metadata.run_id}"),
            server_round=int(_number(config.get(protocol.SERVER_ROUND, 0))),
            settings=SiteSettings.from_message(config),
            coordinator_version=str(config.get(protocol.VERSION)),
            evaluate_first=parse_bool(
                config.get(protocol.EVALUATE_FIRST, False), what=protocol.EVALUATE_FIRST
            ),
            threshold=_number(config.get(protocol.THRESHOLD, 0.5)),
            secagg_threshold=int(_number(config.get(protocol.SECAGG_THRESHOLD, 0))),
        )

    @property
    def scheme(self) -> LabelScheme:
        """The run's task kind and classes (a label map's structures)."""
        train = self.settings.train
        return LabelScheme(train.task, train.classes)

    @property
    def model(self) -> tuple[str, str]:
        """(model name, classical options): what a site needs to rebuild the model it was sent."""
        return self.settings.train.model, self.settings.train.classical


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"A request key holds {value!r} where a number belongs.")
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"A request key holds {value!r} where a number belongs.") from None
