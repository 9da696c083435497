"""Keras model builders, one module per case study, found through models.registry."""
