"""Cooperative games over a model's input features: the one evaluator that every
game-theoretic analysis (Shapley values, interaction indices, Banzhaf values,
meta-attributions) calls, the maskers that turn coalitions into model inputs, and the index
computations on top."""
