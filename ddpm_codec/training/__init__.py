"""Training: the trainer loop (full VLB or L_simple), EMA, time samplers, data-parallel helpers, the pixel-group companion."""
