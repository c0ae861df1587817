"""Experiments made of many runs: hyperparameter sweeps (sweep_*.py) and scaling-law studies.

The layer above `train/`: launch.py -> experiments -> train; nothing in train/ imports it.
"""
