"""``python -m nca_core`` is the ``m3dnca`` command line."""
import sys

from .cli import main

sys.exit(main())
