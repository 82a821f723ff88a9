"""Gradient-inversion attacks on the trained classifiers, and the privacy metrics (issue 7).

reference/ATTACKS_ROBUSTNESS.md is the specification; breaching (unmaintained, broken on timm 1.x)
is the reference for defaults only, every attack is implemented here:

- ``threat``: the client's gradient under the honest-but-curious threat model;
- ``april``: APRIL's closed form (position-embedding gradient + first attention layer);
- ``april_adaptive``: the MJP-aware closed form (detects positions served by the unknown PE row);
- ``inverting_gradients``: cosine gradient matching + TV, signed Adam (Geiping et al. 2020);
- ``gradvit``: gradient matching + patch-border prior + scheduled CNN image prior (GradViT);
- ``metrics``: per-image MSE/PSNR/SSIM/FFT2D/LPIPS and patch-position measures, aggregates, pairs;
- ``runner``: one model through every configured attack; ``commands``: ``vitpe attack ...``.
"""
