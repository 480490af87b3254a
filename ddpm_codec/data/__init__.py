"""Datasets: Fashion-MNIST IDX, CIFAR-10 batches, ImageNet npz and PNG folders, read into uint8 arrays."""
