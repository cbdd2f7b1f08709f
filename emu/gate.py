"""A gate between an emulated GPU's engines and whoever unmaps its memory."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class MapGate:
    """Engines touch memory between `shared()` enter and exit; `exclusive()` (an unmap) waits until none does and
    keeps new ones out meanwhile, so memory is never unmapped under a running packet, method or kernel."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cv:
            while self._writer:
                self._cv.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cv:
                self._readers -= 1
                if not self._readers:
                    self._cv.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cv:
            while self._writer:
                self._cv.wait()
            self._writer = True  # from here new readers wait: an unmap is never starved by busy engines
            while self._readers:
                self._cv.wait()
        try:
            yield
        finally:
            with self._cv:
                self._writer = False
                self._cv.notify_all()
