"""Thin redun tasks, one module per pipeline stage; each wraps functions of :mod:`gpo_vae`."""
