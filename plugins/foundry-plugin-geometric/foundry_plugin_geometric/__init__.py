"""foundry-plugin-geometric: point clouds, meshes, voxel grids and graphs."""
