"""Training: config, the assembled experiment (mesh, model, optimizer, jitted steps), the loop,
metrics and checkpoints. Commands that only measure a config or read a run live in tools/."""
