import sys

from harness.sizing.cli import cli

sys.exit(cli())
