"""The codecs: images to units, the coding chain of model conditionals,
lossless bits-back streams (planes, tiles, pixel groups) and progressive lossy
streams (DDPM Algorithm 3, "Sending x_0", and Algorithm 4, "Receiving")."""
