"""Honest uncertainty: calibrated probabilities, conformal prediction sets, and a detector of unfamiliar inputs."""
