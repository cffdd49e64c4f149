"""Report rendering (HTML, Markdown, JSON, figures) and run exports. Reads run directories only
(``autocompress.rundir``); the Pareto math is the ground floor's (``autocompress.pareto``).

- :mod:`reports.tables`: ``trials_frame``, ``pareto_frame``, ``write_exports`` (trials.csv,
  pareto.csv, recipes/trial-N.yaml), ``read_csv``.
- :mod:`reports.data`: ``report_data`` (the JSON behind every figure, from the CSVs; per-policy
  views from each record's Policy).
- :mod:`reports.html`: ``write_html_report`` (one self-contained file);
  :mod:`reports.markdown`: ``write_markdown_report``; :mod:`reports.figures`: ``write_figures``.
- :mod:`reports.compare`: ``compare_data``, ``write_compare_report`` (shared hypervolume reference).
"""
