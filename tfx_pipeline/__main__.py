"""`python -m tfx_pipeline --config X [--set k=v] [--no-cache]`: `imgclf pipeline run`."""

import sys

from tfx_pipeline import cli

if __name__ == "__main__":
    sys.exit(cli.main(["pipeline", "run", *sys.argv[1:]]))
