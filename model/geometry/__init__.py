"""Geometry: cameras (`camera`), the MPI math and reference renderer (`mpi`), the torch z-buffer
rasteriser (`raster`), and what the posed face mesh looks like from a camera as pixel-aligned
network inputs: coordinate map, mesh alpha planes, disparity (`conditions`) and the portrait
carried through the meshes into the MPI camera (`portrait_warp`).

Pure torch functions with the shapes in their docstrings, except the NumPy modules for processes
that do without torch: `crop_camera` (the default crop camera, for dataset preparation's workers),
`rig` (the poses and intrinsics of `camera` the viewer's main process needs) and `mpi_planes` (the
MPI's plane depths). May import: nothing else of `model`."""
