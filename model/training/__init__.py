"""Training (paper sec. 3.3, supp. A): one training iteration with its stages, losses and
late-stage noise (`step`), guidance distillation into a one-pass student (`distill`), the loop around them with checkpoints, resume, DDP and logs (`loop`),
the checkpoint files of a run (`checkpoint_files`), activation checkpointing
(`activation_checkpointing`), the CUDA switches (`cuda`), the loss terms (`losses`) and LPIPS from
user-supplied weights (`lpips`).

May import: everything in `model` but `model.evaluation`."""
