"""Pareto analysis and report rendering (HTML, Markdown, JSON, figures). Reads run directories only.

- :mod:`reports.pareto`: ``non_dominated``, ``nondominated_sort``, ``hypervolume`` (exact, any
  dimension), ``hypervolume_fraction``, ``hypervolume_curve``, ``knee_point``,
  ``default_reference``, ``ideal_point``.
- :mod:`reports.tables`: ``trials_frame``, ``pareto_frame``, ``write_exports`` (trials.csv,
  pareto.csv, recipes/trial-N.yaml), ``read_csv``.
- :mod:`reports.data`: ``report_data`` (the JSON behind every figure, from the CSVs).
- :mod:`reports.html`: ``write_html_report`` (one self-contained file);
  :mod:`reports.markdown`: ``write_markdown_report``; :mod:`reports.figures`: ``write_figures``.
- :mod:`reports.compare`: ``compare_data``, ``write_compare_report`` (shared hypervolume reference).
"""
