"""Datasets: the raw contract, the registry and download, the synthetic screen, reference files."""
