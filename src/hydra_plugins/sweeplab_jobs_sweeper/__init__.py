"""sweeplab's Hydra sweeper over a list of whole override sets (``hydra/sweeper=jobs``).

Hydra finds sweepers in the ``hydra_plugins`` namespace package only, so it lives here
rather than in ``sweeplab``.
"""
