"""Evaluation: exact -VLB (nll), rate-distortion curves, benchmarks against classical codecs, samples and plots. Only cli and benchmarks import it."""
