"""Evaluation (`imp eval`): self-reenactment on held-out videos with frontal, side-view, stereo and
landmark figures (`reenactment`).

May import: everything in `model` but `model.training`."""
