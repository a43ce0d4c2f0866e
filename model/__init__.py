"""im-portrait's model side: cameras, MPI math, tracking and conditions, network, diffusion, training.

Nothing here imports `app` (the viewer); `app` builds on this package.
"""
