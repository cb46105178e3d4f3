"""GRN benchmarking (design §8): CausalBench statistics on held-out cells, curves, baselines."""
