"""PyTorch parity suite for jaxrnn."""
