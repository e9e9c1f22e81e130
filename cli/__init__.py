"""The ``fedscan`` console command."""
