"""Command-line tools beside training: the demo, scribble propagation, data preparation."""
