"""``python -m relay_ray.cli``: the ``relay-ray`` command."""

import sys

from relay_ray.cli import main

sys.exit(main())
