"""`python -m tfx_pipeline --config X`: the whole pipeline (for now, the demo flow)."""

import sys

from tfx_pipeline import cli

if __name__ == "__main__":
    sys.exit(cli.main(["demo", *sys.argv[1:]]))
