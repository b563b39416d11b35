"""`python -m instageo` is `instarun` (what `accelerate launch -m instageo` runs per process)."""

from instageo.cli import main

raise SystemExit(main())
