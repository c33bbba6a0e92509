"""Feature attribution analyses (Explore pillar): how much each input feature moves the output."""
