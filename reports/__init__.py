"""Pareto analysis and report rendering (HTML, Markdown, JSON, figures)."""
