"""Developer tools: the demo-model trainer and its synthetic data (not imported by the packages)."""
