"""``python -m nca_core`` is the ``m3dnca`` command line."""
import sys

from .cli.main import main

sys.exit(main())
