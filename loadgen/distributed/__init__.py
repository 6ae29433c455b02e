"""Running the generator's workers on other machines (Ray: ray_runner.py)."""
