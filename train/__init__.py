"""Training: state, optimizers, the jitted step, the loop, metrics and checkpoints."""
