"""GL drawing shared by the window, the headset and offline rendering: the MPI renderer (moderngl,
GLSL homographies, tile-culled planes; `renderer`) and the stereo compositor (side by side,
anaglyph; `stereo`).

May import: `model`."""
