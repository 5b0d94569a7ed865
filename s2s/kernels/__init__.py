"""CPU/GPU speed: packed and int8 layers, precision, the allocator, denormals, compilation."""
