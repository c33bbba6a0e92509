"""Hallucination filters for diffusion models (Verify and Steer pillars)."""
