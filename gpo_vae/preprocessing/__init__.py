"""Preprocessing stages (design §2–§5): QC flags, perturbation filters, treatment nodes, splits, pairing."""
