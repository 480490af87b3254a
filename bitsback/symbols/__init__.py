"""Symbol codecs: discretized Gaussians on latent grids and the pixel likelihood (DDPM eq. 13) as integer tables."""
