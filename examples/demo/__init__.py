"""The demo's manifests and data, shipped as package data of ``modelsci.demo_inputs``."""
