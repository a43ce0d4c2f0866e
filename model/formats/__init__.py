"""Files in and out: MPI clips (`clip`, lossless or compact), one MPI frame as glTF (`gltf`) and
video decoding / encoding through PyAV (`video`).

May import: `model.geometry`."""
