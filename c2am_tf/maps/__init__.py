"""Layer 0, numpy and OpenCV, no TensorFlow: the foreground rule, geometry, map -> box, the boxes file, edges, pictures."""
