"""Layer 3: metrics and the evaluation driver that reports every WSOL number."""
