"""`python -m gateway`: the same program as the `gateway` console script."""

from gateway.cli import main

raise SystemExit(main())
