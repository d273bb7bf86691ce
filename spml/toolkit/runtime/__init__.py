"""Validation Pyramid L1: run the assembled pipeline for a limited time and judge it.

Two ways in: an entry point ``module:function`` returning the project's pieces (stages run
in a child process spml drives), or the project's own training/eval commands limited through
the environment contract (``SPML_MAX_STEPS``, ``SPML_TIME_LIMIT``; see ``contract.py``).
"""
