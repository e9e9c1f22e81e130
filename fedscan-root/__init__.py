"""fedscan: federated, differentially private medical-imaging training.

The package is split by role, like the running system:

- ``fedscan.common`` — what both sides share; knows no Flower. Small shared modules at its top
  (errors, defaults, config, settings, protocol, privacy accounting, certs, device, files,
  processes, version) and four sub-packages: ``ingest`` (files → samples), ``data`` (samples →
  tensors), ``models`` (registry, networks, training, checkpoints), ``metrics`` (per site and
  pooled);
- ``fedscan.client`` — the hospital: the Flower ClientApp, the one reply builder, its settings,
  policy, ledger and releases, pre-flight checks, SuperNode and local evaluation;
- ``fedscan.server`` — the coordinator: the Flower ServerApp, strategies, triage, pooling, the run
  log and directory, checkpoints, report, SuperLink and ``fedscan run``;
- ``fedscan.cli`` — the ``fedscan`` console command: argument parsing and printing, and the
  one-machine simulation that drives both roles;
- ``fedscan.wire`` — message content packed for Flower's wire (Flower-aware, so not in
  ``common``; both roles use it).

``client`` and ``server`` never import each other; every wire key is in ``common.protocol``.
"""

import logging

__version__ = "0.1.0"

# The application, not the library, decides what is printed.
logging.getLogger("fedscan").addHandler(logging.NullHandler())
