"""Files: images in and out (PNG and friends), model checkpoints (safetensors + JSON), classical lossless codecs, atomic writes."""
