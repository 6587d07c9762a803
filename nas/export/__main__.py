"""``python -m nas.export``: see :mod:`nas.export.cli`."""

from nas.export.cli import main

raise SystemExit(main())
