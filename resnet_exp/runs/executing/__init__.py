"""How to run it: the ``run`` command, the executors (sequential, pool, Ray) and the worker."""
