"""`python -m fedsim.cli`: the `fedsim` command."""

import sys

from fedsim.cli.commands import main

sys.exit(main())
