"""Run by ``django-admin test`` in a subprocess (see tests/test_threads.py), never by pytest.

``AFTER_RESPONSE_DEMO`` picks the classes, ``stdlib`` or ``after_response``, and the shape of
the work: a thread that ended, or a pool that an application keeps for the process's life.
"""

from __future__ import annotations

import concurrent.futures
import gc
import os
import threading

from django.test import TransactionTestCase

from after_response import threads

from ..models import Record

# A thread that ended leaves its connections to the garbage collector, which may or may not
# run before the teardown: without it the outcome does not depend on when it runs.
gc.disable()

CLASSES, SHAPE = os.environ["AFTER_RESPONSE_DEMO"].split("-")
Thread = threading.Thread if CLASSES == "stdlib" else threads.Thread
Pool = concurrent.futures.ThreadPoolExecutor if CLASSES == "stdlib" else threads.ThreadPoolExecutor
pool = Pool(max_workers=4)  # kept for the process's life, as an application keeps its pool


class ThreadsDoingOrmWork(TransactionTestCase):
    def test_work(self) -> None:
        if SHAPE == "thread":
            workers = [Thread(target=Record.objects.create, kwargs={"name": "t"}) for _ in range(4)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(10)
                self.assertFalse(worker.is_alive())
        else:
            jobs = [pool.submit(Record.objects.create, name="p") for _ in range(4)]
            for job in jobs:
                job.result(10)
        self.assertEqual(Record.objects.count(), 4)
