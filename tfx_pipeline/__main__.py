"""`python -m tfx_pipeline --config X [--set k=v] [--no-cache]`: `imgclf pipeline run`."""

import sys

if __name__ == "__main__":
    # The program reaches up to the front door; nothing imports this module.
    from cli import main

    sys.exit(main(["pipeline", "run", *sys.argv[1:]]))
