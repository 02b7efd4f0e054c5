"""The papers' tables replicated on handgeom's own data, one module each, runnable from the command
line: ``python -m handgeom.experiments.two_hands`` ("Two Hands Are Better Than One", Table I)."""
