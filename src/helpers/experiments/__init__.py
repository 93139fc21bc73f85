"""Measured outside the notebooks: speed, time to accuracy, repeatability, mitigations, LOSO."""
