import sys

from mlplat_tui.cli import main

sys.exit(main())
