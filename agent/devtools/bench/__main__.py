"""`python -m agent.devtools.bench probe|daemon ...`: the child processes the bench starts (not for you)."""

import sys

from agent.devtools.bench.children import child_main

sys.exit(child_main())
