"""OpenXR: the session, swapchains and the spec's frame loop (`session`), OpenXR <-> OpenCV pose
math (`poses`), and the viewer drawn per eye in the headset with a desktop mirror (`view`).

May import: `model`, `app.gl`, `app.viewer`."""
