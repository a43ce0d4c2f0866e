"""Data: from videos to training pairs and driving frames. Foreground mattes and inpainting
(`matting`), dataset preparation (`prepare`, `imp prepare`) and the prepared dataset on disk
(`dataset`), reference / target training pairs with their conditions (`pairs`), the training
data loader that builds them in worker processes (`loader`), and the driving sources of
generation, already retargeted onto the portrait (`driving`).

May import: `model.geometry`, `model.formats`, `model.tracking`, `model.net` (the model config
that decides a training pair's size), and the flat modules `model.atomic_write`,
`model.resources`."""
