import sys

from llmpq.cli import main

sys.exit(main())
