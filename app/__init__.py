"""imp-viewer and the GL side of im-portrait: renderer, windows, OpenXR, generation worker."""
