"""Standalone measurements; run each from the repository root as a module:
`python -m benchmarks.checkpoint_blocking --config configs/tiny.py`.

Every benchmark process, the PyTorch reference's included, keeps freed host memory for reuse as
`launch.py` does (host_memory.py), so both frameworks run with the same allocator settings."""

from host_memory import keep_freed_memory

keep_freed_memory()
