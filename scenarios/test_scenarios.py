"""The chaos suite in a checkout: ``pytest scenarios/`` runs :mod:`harness.suite`, the module that ships in the
package (``outbox-harness run`` runs the same one)."""

from harness.suite import test_scenario

__all__ = ["test_scenario"]
