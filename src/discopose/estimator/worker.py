"""One job at a time on a worker thread, its result picked up by the loop that submitted it: the tracker's networks
run here while its frame loop goes on following (estimator/tracker.py)."""
from __future__ import annotations

import threading
from typing import Any, Callable

from discopose._errors import DiscoposeError


class BackgroundJob:
    """Runs ``function(*args)`` on a worker thread for one submission at a time. :meth:`submit` refuses while a job
    runs or its result waits to be taken (the caller keeps its frame loop going and submits again later);
    :meth:`take` returns the finished job's ``(tag, result)`` once, or None. An exception in the job is raised
    from :meth:`take` in the caller's thread, not lost on the worker."""

    def __init__(self, function: Callable[..., Any], name: str = "discopose-job"):
        self._function = function
        self._condition = threading.Condition()
        self._job: tuple | None = None     # (tag, args) waiting for the worker
        self._done: tuple | None = None    # (tag, result, error) waiting for take()
        self._running = False
        self._closed = False
        self.runs = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        with self._condition:
            return self._busy()

    def _busy(self) -> bool:  # under the lock
        return self._job is not None or self._running or self._done is not None

    def submit(self, tag: Any, *args) -> bool:
        """Queue ``function(*args)``; False (nothing queued) while the previous job is unfinished or untaken."""
        with self._condition:
            if self._closed:
                raise DiscoposeError("the background job was closed; make a new one")
            if self._busy():
                return False
            self._job = (tag, args)
            self._condition.notify_all()
            return True

    def take(self) -> tuple[Any, Any] | None:
        """The finished job's ``(tag, result)``, once; None while it runs or when nothing was submitted."""
        with self._condition:
            done, self._done = self._done, None
        if done is None:
            return None
        tag, result, error = done
        if error is not None:
            raise error
        return tag, result

    def _loop(self) -> None:
        while True:
            with self._condition:
                while self._job is None and not self._closed:
                    self._condition.wait()
                if self._closed:
                    return
                (tag, args), self._job = self._job, None
                self._running = True
            result = error = None
            try:
                result = self._function(*args)
            except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread by take()
                error = exc
            with self._condition:
                self._running = False
                self.runs += 1
                self._done = (tag, result, error)
                self._condition.notify_all()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the submitted job to finish; True when its result is ready to take."""
        with self._condition:
            self._condition.wait_for(lambda: self._done is not None or (self._job is None and not self._running),
                                     timeout_s)
            return self._done is not None

    def close(self) -> None:
        """Stop the worker after the job it runs (if any); a queued job is dropped."""
        with self._condition:
            self._closed = True
            self._job = None
            self._condition.notify_all()
        self._thread.join(timeout=5)
