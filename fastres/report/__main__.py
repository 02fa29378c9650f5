import sys

from fastres.report.cli import main

sys.exit(main())
