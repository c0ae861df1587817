"""Commands that are not training: they measure a config or read a finished run.

`launch.py bench`, `memory`, `info`, `data`, `eval` and `sample` each call one function here.
They sit on top of train/ (they build an Experiment, restore a checkpoint) and nothing in train/
imports them, so train/ holds only what a training run needs.
"""
