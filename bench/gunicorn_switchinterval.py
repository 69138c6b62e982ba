"""gunicorn config file (``--config bench/gunicorn_switchinterval.py``) for one experimental row of
bench/token_endpoint.py: each worker lowers CPython's GIL switch interval from 5 ms to 0.5 ms.

In a gthread worker, a thread that becomes runnable (its Redis reply or C_Sign returned) waits
for the GIL until the running thread drops it, up to the switch interval: with 8 busy threads
these waits stack up in the latency tail. A shorter interval trades a little throughput for a
shorter tail. Used only by the benchmark; not a recommendation until measured in production.
"""

import sys


def post_worker_init(worker):
    sys.setswitchinterval(0.0005)
