"""``python -m bench.chaos``: the fault suite (``scripts/chaos``)."""

from .cli import main

raise SystemExit(main())
