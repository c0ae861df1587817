"""Inference on trained runs: batch files (`launch.py generate`) and an HTTP server (`serve`)."""
