"""The network g_theta: configs as plain data (`config`), building blocks (`blocks`, `attention`),
the Space-Time U-Net with its colour and geometry branches (`unet`), checkpoints with their config
(`checkpoint`), and how a trained checkpoint's prediction becomes the MPI that is rendered, with
the shipped demo weights (`variant`).

May import: `model.geometry`, and the flat modules `model.resources`, `model.atomic_write`."""
