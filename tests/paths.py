"""Where the tests' own files are, whichever subdirectory a test lives in."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
DATA = TESTS / "data"
MINI = DATA / "mini.yaml"  # a small vehicle definition the unit tests decode
