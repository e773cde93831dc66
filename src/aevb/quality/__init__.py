"""Sample quality: FID with the standard Inception features (found offline), a domain FID
with a small classifier trained on the run's own data, precision and recall
(Kynkäänniemi et al. 2019), and a comparison table of runs.

Not imported by `import aevb`; import the modules: `from aevb.quality import frechet`.
  frechet.py           the Fréchet distance and Gaussian statistics of features
  precision_recall.py  k-NN manifold precision and recall
  inception.py         finding the Inception weights; torch-fidelity's network; features
  classifier.py        the domain classifier (LeNet-like): train once, cache, features
  samples.py           all of the above for a sampler against real images -> one dict
  run_access.py        the one place that opens run directories
  compare.py           `aevb compare`: a table and a figure of several runs
"""
