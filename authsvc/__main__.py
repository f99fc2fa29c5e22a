"""`python -m authsvc` is the `authsvc` command."""

import sys

from authsvc.cli import main

sys.exit(main())
