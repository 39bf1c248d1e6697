"""Layer 0, no TensorFlow: files and output names, the one image reader, errors, safe pickle, .pth reading."""
