"""Thin entry point for tools that still call setup.py. The build is pyproject.toml (scikit-build-core)
plus CMakeLists.txt; this forwards `python setup.py develop|install` to pip, against the torch
already installed (no build isolation)."""

import subprocess
import sys

if __name__ == "__main__":
    editable = ["--editable"] if "develop" in sys.argv[1:] else []
    sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--no-build-isolation", *editable, "."]))
