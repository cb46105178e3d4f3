"""Evaluation of perturbation prediction (design §7): ATE, metrics, trivial baselines."""
