"""The site's sources (mkdocs config, jinja2 templates, assets), shipped as package data of ``modelsci.site``."""
