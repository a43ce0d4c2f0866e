"""Geometry: cameras (`camera`), the MPI math and reference renderer (`mpi`), the torch z-buffer
rasteriser (`raster`), and what the posed face mesh looks like from a camera as pixel-aligned
network inputs: coordinate map, mesh alpha planes, disparity (`conditions`) and the portrait
carried through the meshes into the MPI camera (`portrait_warp`).

Pure torch functions with the shapes in their docstrings, except `crop_camera`: the default crop
camera in NumPy, for dataset preparation's workers, which do without torch. May import: nothing
else of `model`."""
