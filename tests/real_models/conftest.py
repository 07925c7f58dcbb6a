"""The real-model suite: its shared tables and checks (``_table``) import by name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
