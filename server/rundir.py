"""The run directory ``runs/<run-id>/``: the one place that names every artefact of a run.

Layout (every name below is a constant of this module; nothing else spells one):

- ``status.json`` — the run's state (one of the ``STATE_*`` constants): ``starting`` (submitted),
  ``resuming``, ``running`` (with its ``phase``: waiting-for-sites, round r of R, cross-site),
  then ``completed``, ``completed-with-gaps`` (with ``gaps``: each phase that missed sites, which
  sites and why, see :mod:`fedscan.server.coverage`) or ``failed`` (with a reason a person can act
  on);
- ``events.jsonl`` — append-only, one JSON object per event of the run as it goes (waiting for
  sites, a round sent and aggregated, cross-site steps, report written): site names and counts
  only, never paths or patient data; what ``fedscan run`` prints;
- ``config.json`` (the run's settings, nested) and ``run-config.json`` (flat: what ``--resume``
  uses), both with the starting weights' SHA-256 when the run has ``init-weights``;
- ``init-weights.json`` — what the starting weights gave the model: each parameter loaded, new or
  ignored, with its shapes (:mod:`fedscan.common.models.weight_match`);
- ``metrics.jsonl`` — one JSON object per round: per-site train and evaluation metrics, ε per site,
  the aggregate, the pooled metrics and the refusals the round received;
- ``histograms.json`` — the latest round's pooled and per-site score histograms;
- ``cross_site.json`` — the models × sites matrix; ``global.pt`` / ``final.pt`` (+ ``.json``) —
  models;
- ``checkpoints/`` — the coordinator's round checkpoints; ``tensorboard/`` — event files;
- ``report.html`` and ``model_card.md``; ``coordinator.log``, ``simulation.json`` and
  ``sites/<name>/`` (each simulated site's state) for simulations; ``flower-run.json`` for deployed
  runs.

Files are written atomically (:func:`fedscan.common.files.atomic_write_bytes`), metrics.jsonl by
appending.
"""

from __future__ import annotations

import datetime
import enum
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedscan.common.files import atomic_write_bytes, json_safe, write_json

if TYPE_CHECKING:
    import torch

STATUS_FILE = "status.json"
EVENTS_FILE = "events.jsonl"
CONFIG_FILE = "config.json"
RUN_CONFIG_FILE = "run-config.json"
METRICS_FILE = "metrics.jsonl"
HISTOGRAMS_FILE = "histograms.json"
MATRIX_FILE = "cross_site.json"
REPORT_FILE = "report.html"
MODEL_CARD_FILE = "model_card.md"
INIT_WEIGHTS_FILE = "init-weights.json"  # what the starting weights gave the model
COORDINATOR_LOG = "coordinator.log"
SIMULATION_FILE = (
    "simulation.json"  # how the sites were simulated: what --resume rebuilds them from
)
FLOWER_RUN_FILE = "flower-run.json"  # the Flower run ids of the run's submissions
CHECKPOINT_DIR = "checkpoints"
EVENTS_DIR = "tensorboard"
SITES_DIR = "sites"
FINAL_MODEL = "final"  # final.pt + final.json: the model and its operating threshold
GLOBAL_MODEL = "global"  # global.pt + global.json: rewritten after every round

STATE_STARTING = "starting"  # submitted; the ServerApp has not started yet
STATE_RESUMING = "resuming"  # resubmitted; not the dead run's last word
STATE_RUNNING = "running"
STATE_COMPLETED = "completed"  # every phase reached every site it needed
STATE_COMPLETED_WITH_GAPS = "completed-with-gaps"  # a final model, but a phase missed sites
STATE_FAILED = "failed"
FINISHED_STATES = (STATE_COMPLETED, STATE_COMPLETED_WITH_GAPS)  # nothing left to resume
FINAL_STATES = (*FINISHED_STATES, STATE_FAILED)
# What a running run is doing (status.json ``phase``).
PHASE_WAITING = "waiting-for-sites"  # also the name of its event
PHASE_ROUND = "round"
PHASE_APPROVAL = "waiting-for-approval"  # a round waits for sites that have not approved the run
PHASE_CROSS_SITE = "cross-site-validation"


class Event(enum.StrEnum):
    """Every event name ``events.jsonl`` holds (what `fedscan run`/`simulate` print, one line each;
    cli/display.py words them)."""

    SUBMITTED = "submitted"  # written by `fedscan run` before each submission of the run
    WAITING_FOR_SITES = "waiting-for-sites"
    INIT_WEIGHTS_LOADED = "init-weights-loaded"  # the starting weights: counts and SHA-256
    ROUND_TRAINING = "round-training"
    ROUND_AGGREGATED = "round-aggregated"
    ROUND_RESENT = "round-resent"
    WAITING_FOR_APPROVAL = "waiting-for-approval"  # sites that have not approved the run yet
    FINAL_EVALUATION = "final-evaluation"
    FINAL_EVALUATED = "final-evaluated"
    CROSS_SITE_VALIDATION = "cross-site-validation"
    CROSS_SITE_FINE_TUNE = "cross-site-fine-tune"
    CROSS_SITE_FINE_TUNED = "cross-site-fine-tuned"
    CROSS_SITE_EVALUATION = "cross-site-evaluation"
    CROSS_SITE_EVALUATED = "cross-site-evaluated"
    FAILED = "failed"
    REPORT_WRITTEN = "report-written"
    REPORT_FAILED = "report-failed"


REPORT_EVENTS = frozenset({Event.REPORT_WRITTEN, Event.REPORT_FAILED})  # a finished run's last


def new_run_id() -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class RunDirectory:
    path: Path
    run_id: str

    @classmethod
    def create(
        cls, root: Path, run_id: str | None = None, *, exist_ok: bool = False
    ) -> RunDirectory:
        """A new run directory; ``exist_ok`` lets a ServerApp adopt one its launcher prepared."""
        run_id = run_id or new_run_id()
        path = Path(root) / run_id
        path.mkdir(parents=True, exist_ok=exist_ok)
        return cls(path, run_id)

    def file(self, name: str) -> Path:
        """The path of the artefact ``name`` (one of this module's constants)."""
        return self.path / name

    def model_file(self, model: str) -> Path:
        """``final.pt`` or ``global.pt``."""
        return self.path / f"{model}.pt"

    @property
    def sites_state_dir(self) -> Path:
        """Where simulated sites keep their state (ledger, releases), one folder per site."""
        return self.path / SITES_DIR

    def write_status(self, state: str, **details: Any) -> None:
        """``status.json``: one of the ``STATE_*`` constants, with its details."""
        write_json(self.file(STATUS_FILE), {"state": state, "run_id": self.run_id, **details})

    def read_status(self) -> dict[str, Any]:
        return self.read_json(STATUS_FILE)

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.file(CONFIG_FILE), config)

    def write_json(self, name: str, document: dict[str, Any]) -> None:
        write_json(self.file(name), document, indent=None)

    def read_json(self, name: str) -> dict[str, Any]:
        """The artefact ``name`` as JSON; empty when it was never written."""
        path = self.file(name)
        return json.loads(path.read_text()) if path.is_file() else {}

    def append_event(self, event: str, **fields: Any) -> None:
        """One line of ``events.jsonl`` (site names and counts only: it is printed as is)."""
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with open(self.file(EVENTS_FILE), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(json_safe(record)) + "\n")

    def read_events(self) -> list[dict[str, Any]]:
        """Every complete line of ``events.jsonl`` (a line still being written is skipped)."""
        path = self.file(EVENTS_FILE)
        if not path.is_file():
            return []
        lines = path.read_text(encoding="utf-8").split("\n")[:-1]  # the last is unfinished or ""
        return [json.loads(line) for line in lines if line.strip()]

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.file(METRICS_FILE), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(json_safe(record)) + "\n")

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        """metrics.jsonl holding exactly ``records`` (a resumed run drops rounds it will redo)."""
        lines = "".join(json.dumps(json_safe(record)) + "\n" for record in records)
        atomic_write_bytes(self.file(METRICS_FILE), lines.encode())

    def write_run_config(self, flat: dict[str, Any]) -> None:
        """The run's settings in run-config form: what ``--resume`` continues with."""
        write_json(self.file(RUN_CONFIG_FILE), flat)

    def read_run_config(self) -> dict[str, Any] | None:
        path = self.file(RUN_CONFIG_FILE)
        return json.loads(path.read_text()) if path.is_file() else None

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.file(METRICS_FILE)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def save_model(
        self, name: str, model_name: str, state_dict: dict[str, torch.Tensor], **meta: Any
    ) -> Path:
        from fedscan.common.models.checkpoint import save_checkpoint  # torch: only where models are

        path = self.model_file(name)
        save_checkpoint(path, model_name, state_dict, run_id=self.run_id, **meta)
        return path


@dataclass(frozen=True)
class RunProgress:
    """What a running run reports as it goes: an event in ``events.jsonl`` and, with a ``phase``,
    the ``running`` status that ``fedscan status`` shows."""

    run_dir: RunDirectory
    resumed: bool = False

    def __call__(self, event: str, *, phase: str | None = None, **fields: Any) -> None:
        self.run_dir.append_event(event, **fields)
        if phase is not None:
            self.run_dir.write_status(STATE_RUNNING, resumed=self.resumed, phase=phase, **fields)
