"""The mask model: image-resolution foreground masks self-trained on C2AM's pseudo-masks."""
