"""Datasets and DataModules: VOC scribbles, synthetic demo data, data preparation."""
