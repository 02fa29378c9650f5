"""`python -m fastres.plan`: see fastres/plan/cli.py."""

import sys

from fastres.plan.cli import main

sys.exit(main())
