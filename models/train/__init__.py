"""Training and evaluation: the loops (``loop``, ``scenes``, ``roi``), the commands
(``python -m models.train`` = ``command``, ``evaluate``, ``experiment``) and the experiment grid
(``grid``, local or on Ray)."""

from models.train.command import build_parser, main

__all__ = ["build_parser", "main"]
