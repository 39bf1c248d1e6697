"""Layer 3: weakly supervised semantic segmentation: CAMs, background-cue models, refinement."""
