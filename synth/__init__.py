"""synth: synthetic change pairs for one-prompt anomaly segmentation."""
