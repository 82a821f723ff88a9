"""python -m vitpe"""
import sys

from vitpe.cli import main

sys.exit(main())
