"""Training the embedded default model, and the synthetic data it learns from."""
