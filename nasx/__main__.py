"""``python -m nasx`` is the ``nasx`` command."""
import sys

from nasx.cli import main

sys.exit(main())
