"""Tracking: results files, W&B and CSV loggers. Never imports training code."""
