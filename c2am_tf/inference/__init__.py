"""Layer 3: maps -> boxes and masks in image pixels, and box extraction at scale (Apache Beam)."""
