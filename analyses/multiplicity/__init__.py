"""Predictive multiplicity (Verify pillar): the Rashomon set of a model and how much it disagrees."""
