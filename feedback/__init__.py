"""Feedback-driven fine-tuning: a store of reviewer verdicts, the review page, and training on them.

``store.py`` (SQLite store), ``versions.py`` (model version strings), ``server.py`` (the review
page), ``train.py`` (corrections to SFT pairs, verdicts to KTO or a feedback reward model),
``cli.py`` (``detox-feedback add | list | export | serve | train``).
"""
