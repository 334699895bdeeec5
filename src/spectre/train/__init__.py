"""Training SPECTRE's perceptual encoder: data preparation, K-frame clips, the training step, the loop."""
