"""One training cycle: run the training command, bundle, gate, record, deploy."""
