"""fedscan: federated, differentially private medical-imaging training.

The package is split by role, like the running system:

- ``fedscan.common`` — data, models, DP training, metrics (knows no Flower);
- ``fedscan.client`` — what runs at a hospital (Flower ClientApp);
- ``fedscan.server`` — what runs at the coordinator (Flower ServerApp);
- ``fedscan.cli`` — the ``fedscan`` console command.
"""

import logging

__version__ = "0.1.0"

# The application, not the library, decides what is printed.
logging.getLogger("fedscan").addHandler(logging.NullHandler())
