"""`python -m xnet_model.experiments PLAN` = `xnet experiment PLAN`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
