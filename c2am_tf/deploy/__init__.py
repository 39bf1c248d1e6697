"""Layer 3: SavedModel and TFLite exports, the LiteRT device side (numpy only) and the TF Serving client."""
