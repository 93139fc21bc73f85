"""What the study measures: metrics, saliency, per-source figures, plots, the notebooks' steps."""
