"""Deliberately broken variants of the reference outbox (negative controls).

Nothing here is used by the outbox or the harness; ``tests/test_negative_controls.py``
runs the real scenarios against these variants to show each scenario catches the
breakage it targets. Workers load them as ``tests.broken.variants:<name>``.
"""
