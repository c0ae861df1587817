"""Run configurations (ml_collections); each file says how to run it."""
