"""The C2AM model: activation head and disentangler layers, the contrastive loss, the model and its parameter groups."""
