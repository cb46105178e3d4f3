"""GPO-VAE: explainable perturbation-response modelling with a GRN-aligned latent mask."""

__version__ = "0.1.0"
