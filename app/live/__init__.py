"""Live generation: the background worker sampling clip after clip (`worker`), the bounded ring
buffer and frame pacer between it and the render loop (`ring_buffer`), the session tying them to
playback and saving (`session`), and the webcam driving source (`webcam`).

May import: `model`."""
