"""Layer 2: the models, each with its serialization."""
