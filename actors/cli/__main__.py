"""`python -m actors.cli ...` runs the `harvester` command."""

import sys

from actors.cli.main import main

sys.exit(main())
