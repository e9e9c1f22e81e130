"""Allow ``python -m fedscan``."""

from fedscan.cli.main import run

run()
