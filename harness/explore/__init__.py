"""``outbox-harness explore``: property-based chaos. Hypothesis generates whole scenarios (:mod:`.strategy`), each
runs against the implementation, a failure is shrunk and written out as a reproducer (:mod:`.reproducer`); the
search and its budget are :mod:`.search`, the command :mod:`.cli`."""
