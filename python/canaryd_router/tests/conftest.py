import pathlib
import sys

# The package is tested from its source tree, installed or not.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
