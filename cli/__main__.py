"""`python -m cli ARGS`: `imgclf ARGS` without the installed script."""

import sys

from cli import main

sys.exit(main())
