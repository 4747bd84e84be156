"""``python -m ifqa_loss ...`` is the same as ``ifqa-loss ...``."""
import sys

from .cli import main

sys.exit(main())
