"""`python -m cds serve|demo`."""

from cds.cli import main

raise SystemExit(main())
