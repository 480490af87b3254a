"""Test aids shipped with the package: the closed-form denoiser of K fixed images (an exact model with a known VLB)."""
