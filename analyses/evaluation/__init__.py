"""Evaluation analyses (Verify pillar): how well a model does what it claims."""
