"""`python -m app.cli ...` is `imp ...` (how torchrun starts training processes)."""
import sys

from app.cli.imp import main

sys.exit(main())
