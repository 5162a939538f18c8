"""The benchmark's workers besides jaxnet's own: the workloads they share, PyTorch and NumPy loops."""
