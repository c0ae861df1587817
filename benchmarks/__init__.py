"""Standalone measurements; run each from the repository root as a module:
`python -m benchmarks.checkpoint_blocking --config configs/tiny.py`."""
