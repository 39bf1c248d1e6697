"""Layer 1: the TensorFlow runtime every model and trainer shares: distribution strategies and what workers agree on."""
