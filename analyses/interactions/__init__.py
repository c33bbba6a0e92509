"""Feature interaction analyses (Explore pillar): Shapley interactions, weighted Banzhaf, meta-attributions."""
