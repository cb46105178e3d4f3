"""Statistics shared across stages: two-sample rank tests shared by the summary statistics, the DEG ranking and the GRN evaluation.

- :mod:`gpo_vae.stats.rank_tests`: the Mann-Whitney core (values sorted gene by gene, ranks
  from counting reference values below and equal, tie term, normal-approximation p-value).
- :mod:`gpo_vae.stats.anderson_darling`: Anderson-Darling and Mann-Whitney of every gene of a
  sample against a sorted reference, in one compiled merge walk.
- :mod:`gpo_vae.stats.mad`: median-absolute-deviation outlier thresholds (QC and the summary
  statistics).
- :mod:`gpo_vae.stats.common_labels`: the labels every method has a value for, so that methods
  are averaged over the same perturbations.
"""
