"""What runs at the coordinator: the Flower ServerApp, strategies and the run directory."""
