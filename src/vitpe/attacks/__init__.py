"""Gradient-inversion attacks on the trained classifiers, and the privacy metrics.

docs/FIDELITY.md rows 38-49 and 69 record the choices; breaching (unmaintained, broken on timm 1.x) is
the reference for defaults only, every attack is implemented here:

- ``registry``: every attack behind one interface (name -> :class:`Attack`, kind optimisation or
  closed_form), the names params.yaml lists;
- ``threat``: the client's gradient under the honest-but-curious threat model;
- ``april``: APRIL's closed form (position-embedding gradient + first attention layer);
- ``april_adaptive``: the MJP-aware closed form (detects positions served by the unknown PE row);
- ``pe_gradient``: the closed form on the standard block (PE-table + patch-embedding gradients), and
  its MJP-aware variant;
- ``matching``: the optimisation attacks' gradient-matching step, for one reconstruction (autograd) or
  several independent ones in one vmapped objective, and the gradient distances, initialisation and
  image box they share;
- ``inverting_gradients``: cosine gradient matching + TV, signed Adam (Geiping et al. 2020);
- ``gradvit``: gradient matching + patch-border prior + scheduled CNN image prior (GradViT);
- ``metrics``: per-image MSE/PSNR/SSIM/FFT2D/LPIPS and patch-position measures, aggregates, pairs;
- ``budget``: the split of a model's images into jobs and each job's runtime;
- ``runner``: one model (one job's share of its images) through every configured attack;
  ``outputs``: the metrics/table/reconstruction files and the merge of a model's jobs;
  ``commands``: ``vitpe attack ...`` (the figure commands of the group are the report's).
"""
