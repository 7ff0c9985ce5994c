"""``python -m dsac_ros.cli VERB ...``: the same as ``dsac-ros VERB ...``."""

import sys

from dsac_ros.cli import main

sys.exit(main())
