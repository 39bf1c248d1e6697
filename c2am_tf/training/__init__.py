"""Layer 3: fit loops, callbacks, and the workflows that train (the routed heads among them)."""
