"""The command-line front ends: `imp` and its subcommands (`imp`: the dispatcher; one module per
subcommand: track, prepare, lift, train, eval, generate, render, export, export-onnx) and `imp-viewer`
(`viewer`). Each parses its flags and calls into `model` and the rest of `app`; heavy imports stay
inside `run()`, so `imp --help` is fast.

May import: `model`, `app.gl`, `app.viewer`, `app.live`, `app.xr`, `bench` (for `imp bench`)."""
