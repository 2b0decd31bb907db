"""What compression does to weight tensors, shared by the methods, measurement and verification: sparsity patterns,
layer selection, quantization grids and level groups."""
