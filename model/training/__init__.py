"""Training (paper sec. 3.3, supp. A): one training iteration with its stages, losses and
late-stage noise (`step`), the loop around it with checkpoints, resume, DDP and logs (`loop`),
the checkpoint files of a run (`checkpoint_files`), activation checkpointing
(`activation_checkpointing`), the CUDA switches (`cuda`), the loss terms (`losses`) and LPIPS from
user-supplied weights (`lpips`).

May import: everything in `model` but `model.evaluation`."""
