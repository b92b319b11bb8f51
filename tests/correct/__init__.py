"""Correct lease outboxes whose designs differ from the reference's, each exposed as an adapter.

A harness that blames a correct implementation is worse than none, and checkers written beside the
reference outbox may lean on its habits. These are independent (asyncpg and their own SQL, nothing from
``outbox/``), correct by the guarantees catalogue, and built differently, so that such leanings show up
as false alarms. Workers load them by spec string, e.g. ``--impl tests.correct.prefetch:adapter``.

==========================  ==========================================================  =================
adapter                     design                                                      lease_times
==========================  ==========================================================  =================
prefetch:adapter            one fetch loop claims into a 2 × max_workers buffer;        no (lease_at None);
                            workers start handlers later; expired buffered rows are     claims reported
                            handed back unhandled; declares prefetch
prefetch:silent             the same, reporting neither claims nor lease times          no
prefetch:eager              the same, but a buffered row is handled even when its       no
                            lease ran out in the buffer (its writes are lease_lost)
heartbeat:adapter           no buffer; short leases renewed every TTL/3 while the       no
                            handler runs, so only dead workers' rows are reclaimed
heartbeat:fixed_timeout     the same with a 6 s heartbeat timeout of its own (not the   no
                            scenario's lease), declared as Timings
==========================  ==========================================================  =================

Shared by all: ``_lease.py`` (table, SQL, connections) and ``_consumer.py`` (settling, claim loop,
adapter). Their broken twins are in ``tests/broken/prefetch_variants.py``.
"""
