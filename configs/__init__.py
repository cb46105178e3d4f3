"""The run configs (YAML), shipped in the package as ``gpo_vae.configs``: read them with :mod:`gpo_vae.presets`."""
