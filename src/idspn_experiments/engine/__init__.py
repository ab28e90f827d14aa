"""The engine every experiment shares: config, the training loop, checkpoints, files, processes."""
