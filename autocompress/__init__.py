"""The ground floor of autocompress: contracts every package may import.

``autocompress`` imports none of ``spaces``, ``compress``, ``search`` or ``reports``; they all
import it. It holds what they must agree on:

- :mod:`autocompress.errors`: :class:`~autocompress.errors.UserError` (bad input the user
  fixes; the CLI prints it as one line, exit code 2) and the errors of the contracts below;
- :mod:`autocompress.metrics`: metric names, their directions and descriptions;
- :mod:`autocompress.rundir`: the run directory (trial records, ``run.json``, atomic writes,
  file locks, loading a run, its Pareto front);
- :mod:`autocompress.pareto`: pure Pareto, hypervolume, knee and crowding-distance math.
"""
