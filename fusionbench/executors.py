"""Where the harness's per-case tasks run: in-process, on a local process pool, or on Dask.

All three executors share one small interface, :meth:`Executor.run`: a module-level function
``fn(context, task)`` is applied to every task and ``(task, result)`` pairs come back in completion
order. ``context`` (the created and fitted method instances) is shipped to each worker once, not
with every task, because a trained network may weigh tens of megabytes. A task that raises in a way
``fn`` did not catch comes back as ``(task, exception)``, so the caller decides what a failure means.

The results never depend on the executor: every task is a pure function of its inputs, and the
caller sorts what it assembles (DESIGN §6; data notes §4 on joblib/Dask).

:func:`pool_map` is the package's one local process pool: :class:`ProcessExecutor` runs on it, and
so does any other code that needs worker processes (the organ-model training, for one).
"""
from __future__ import annotations

import functools
import hashlib
import multiprocessing
import os
import pickle
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterable, Iterator

__all__ = ["Executor", "SerialExecutor", "ProcessExecutor", "DaskExecutor", "make_executor",
           "default_jobs", "pool_map"]

# Worker-side cache of unpickled contexts, keyed by the digest of their pickle.
_CONTEXTS: dict[str, Any] = {}


def default_jobs() -> int:
    """Cores this process may use (respects CPU affinity, e.g. under taskset or a batch system)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def pool_map(fn: Callable[..., Any], argsets: Iterable[tuple], jobs: int, *, mp_context=None,
             initializer: Callable[..., None] | None = None, initargs: tuple = (),
             return_exceptions: bool = False) -> Iterator[tuple[tuple, Any]]:
    """``fn(*args)`` for every argument tuple on at most ``jobs`` worker processes.

    Yields ``(args, result)`` in completion order, so the caller can advance a progress display
    as tasks finish. Workers start with ``mp_context`` (default ``spawn``: safe with threads, such
    as torch's, BLAS's or a progress bar's, in the parent) and run ``initializer(*initargs)``
    first. A task that raises, or whose worker dies, raises here; with ``return_exceptions`` its
    exception is yielded as the result instead. Tasks not yet started are cancelled when the
    caller stops iterating or an exception propagates.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    argsets = [tuple(args) for args in argsets]
    if not argsets:
        return
    ctx = mp_context if mp_context is not None else multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(argsets)), mp_context=ctx, initializer=initializer,
                             initargs=initargs) as pool:
        futures = {pool.submit(fn, *args): args for args in argsets}
        try:
            for fut in as_completed(futures):
                try:
                    result = fut.result()
                except Exception as exc:  # noqa: BLE001 - e.g. a worker killed by the OS
                    if not return_exceptions:
                        raise
                    result = exc
                yield futures[fut], result
        finally:
            for fut in futures:
                fut.cancel()


def _single_thread_libraries() -> None:
    # N workers each running an N-thread torch would oversubscribe the cores N-fold.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _install_context(token: str, blob: bytes) -> None:
    if token not in _CONTEXTS:
        _CONTEXTS.clear()  # one run at a time per worker; drop the previous run's methods
        _CONTEXTS[token] = pickle.loads(blob)
    _single_thread_libraries()


def _call_with_context(fn: Callable, token: str, blob: bytes | None, task: Any) -> Any:
    if token not in _CONTEXTS:
        if blob is None:
            raise RuntimeError("executor context missing on this worker")
        _install_context(token, blob)
    _single_thread_libraries()
    return fn(_CONTEXTS[token], task)


def _pickle_context(context: Any) -> tuple[str, bytes]:
    blob = pickle.dumps(context, protocol=pickle.HIGHEST_PROTOCOL)
    return hashlib.sha256(blob).hexdigest(), blob


class Executor:
    """Runs ``fn(context, task)`` for every task; yields ``(task, result_or_exception)``."""

    name = "base"
    workers = 1

    def run(self, fn: Callable[[Any, Any], Any], tasks: Iterable[Any], context: Any
            ) -> Iterator[tuple[Any, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (no-op for the serial executor)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> str:
        return f"{self.name} ({self.workers} worker{'s' if self.workers != 1 else ''})"


class SerialExecutor(Executor):
    """Runs tasks one after another in this process (``--jobs 1``; the reference behaviour)."""

    name = "serial"

    def run(self, fn, tasks, context):
        for task in tasks:
            try:
                yield task, fn(context, task)
            except Exception as exc:  # noqa: BLE001 - handed to the caller as a failure
                yield task, exc


class ProcessExecutor(Executor):
    """A local pool of ``jobs`` worker processes (``--jobs N``).

    Workers start with the ``forkserver`` method: forking the main process directly would copy
    the progress display's thread and any held locks into the child.
    """

    name = "processes"

    def __init__(self, jobs: int):
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.workers = jobs
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self._mp_context = multiprocessing.get_context(method)
        if method == "forkserver":
            self._mp_context.set_forkserver_preload(["fusionbench.runner"])

    def run(self, fn, tasks, context):
        token, blob = _pickle_context(context)
        call = functools.partial(_call_with_context, fn, token, None)
        for (task,), result in pool_map(call, [(task,) for task in tasks], self.workers, mp_context=self._mp_context,
                                        initializer=_install_context, initargs=(token, blob),
                                        return_exceptions=True):
            yield task, result


class DaskExecutor(Executor):
    """Tasks on a Dask ``distributed`` cluster (``--scheduler tcp://HOST:8786``).

    ``address="local"`` or ``"local:N"`` starts a ``LocalCluster`` of N single-threaded worker
    processes bound to 127.0.0.1. Tasks return their outputs to this process, which writes the
    files, so workers on other machines need no shared file system.
    """

    name = "dask"

    def __init__(self, address: str, *, jobs: int | None = None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise RuntimeError("--scheduler needs Dask: pip install 'fusionbench[dist]'") from None
        self._cluster = None
        if address == "local" or address.startswith("local:"):
            n = int(address.partition(":")[2] or jobs or default_jobs())
            self._cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                         host="127.0.0.1", dashboard_address=None)
            self._client = Client(self._cluster)
        else:
            try:
                self._client = Client(address, timeout="30s")
            except OSError as exc:
                raise RuntimeError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        self.address = address
        self.workers = max(1, sum(w.get("nthreads", 1)
                                  for w in self._client.scheduler_info().get("workers", {}).values()))

    def run(self, fn, tasks, context):
        from distributed import as_completed as dask_as_completed

        token, blob = _pickle_context(context)
        tasks = list(tasks)
        if not tasks:
            return
        # Scattered once per worker and kept there; each task carries only a reference.
        blob_ref = self._client.scatter(blob, broadcast=True, hash=False)
        futures = {self._client.submit(_call_with_context, fn, token, blob_ref, task, pure=False): i
                   for i, task in enumerate(tasks)}
        try:
            for fut in dask_as_completed(list(futures)):
                task = tasks[futures[fut]]
                try:
                    yield task, fut.result()
                except Exception as exc:  # noqa: BLE001
                    yield task, exc
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def make_executor(jobs: int | None = None, scheduler: str | None = None) -> Executor:
    """The executor for ``--jobs`` / ``--scheduler``: Dask if a scheduler is named, else local."""
    if scheduler:
        return DaskExecutor(scheduler, jobs=jobs)
    jobs = default_jobs() if jobs is None or jobs <= 0 else jobs
    return SerialExecutor() if jobs == 1 else ProcessExecutor(jobs)
