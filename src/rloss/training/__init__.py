"""Training plumbing: the Lightning CLI, callbacks, checkpoints, shipped config lookup."""
