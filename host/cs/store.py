"""The server's database work, in batches, in a database process of its own.

`Store` queues statements and query functions (host/cs/storage.py) from the event loop and
sends everything queued during a few milliseconds to the database process as one batch, run
there in one transaction. Each item's result comes back once the batch is committed, so an
answer sent to a station means "stored".

Why a process: SQLite's work (index updates, commits) was a third of the event loop's CPU,
and a database thread does not help, because sqlite3 takes Python's GIL back after every row
it steps, so the loop and the thread queue for the GIL at every row (measured 4x more CPU and
10x longer batches). A process runs the database on the other core with nothing shared: the
loop only pickles each batch into one write on a socket. There, a thread reads the socket
as it fills, so the loop's writes never wait for a commit, and each transaction takes the
batches that arrived during the last one (up to GROUP_BYTES).

    python -m host.cs.store URL FD DAYS     the database process (the Store starts it);
                                            DAYS: the frame log's retention, 0 keeps all
"""

import asyncio
import collections
import contextlib
import functools
import logging
import pickle
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from host.cs.storage import Db, StorageError, index_log, prune_log

log = logging.getLogger("evse.cs")

# Batches start at most this often: a commit costs about as much as twenty messages' rows
# (each writes its dirty pages), so under load a few milliseconds more latency buy back a
# fifth of the database's CPU; when idle, the next batch starts at once.
BATCH_INTERVAL_S = 0.003
# A busy loop does not wait for the interval: a batch starts as soon as this many
# statements and calls wait, so the database process works while the loop reads on.
BATCH_ITEMS = 256
# The database process indexes the frame log a pass at a time (storage.index_log), at most
# this often, between groups of batches: a pass's few milliseconds delay at most one group.
INDEX_INTERVAL_S = 0.02
INDEX_RETRY_S = 5.0  # after a pass failed (logged each time)
# With a retention set, old frames are deleted a step at a time (storage.prune_log), steps
# as often as passes while a backlog lasts, then a look this often.
PRUNE_INTERVAL_S = 60.0
# A transaction takes the batches waiting, up to this many bytes of them (about forty
# batches): a backlog is committed in steps rather than all in one transaction.
GROUP_BYTES = 4 << 20
# The database process's inbox holds at most this many bytes of batches not yet taken (and a
# read more), a few groups: beyond, it reads no more, the socket fills and the server's Store
# is full (BACKLOG_HIGH), so a backlog waits in the stations' sockets, not in either process.
INBOX_BYTES = 4 * GROUP_BYTES
# A database process that died is started again at once; while starting fails (the
# database is unreachable), again after this delay, doubled each time up to the maximum.
RESTART_DELAY_S = 0.5
RESTART_MAX_DELAY_S = 10.0
RESTART_TIMEOUT_S = 30.0  # for it to open the database: what waits meanwhile is held
# Batches sent and not yet taken by the database process wait in the transport's buffer once
# the socket's is full: from BACKLOG_HIGH bytes there the Store is `full` and the server
# reads no more from the stations that send (Session.data_received) until it is down to
# BACKLOG_LOW. Stations sending faster than the database stores (a flood of frames, each
# logged) would otherwise grow the server's memory without bound. Far above a busy server's
# backlog (a few batches).
BACKLOG_HIGH = 16 << 20
BACKLOG_LOW = 4 << 20

Done = Callable[[bool, Any], None]  # called with (True, result) or (False, exception)
Result = tuple[bool, Any]  # (True, value) or (False, exception)
# A statement and its parameters, a function and its arguments, or a commit marker and how
# many of the statements just before it are its own (Store.after_commit)
Item = tuple[str | Callable | None, Any]

ENDED = "the database process has ended"
_HEADER = struct.Struct("!I")  # each message on the socket: its length, then a pickle


def _message(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _take(buffer: bytearray, limit: int | None = None) -> list[Any]:
    """The whole messages at the start of `buffer`, taken out of it; with `limit`, no more
    once that many bytes are taken (at least one message, if one is whole)."""
    values = []
    start = 0
    while _whole_message(buffer, start) and (limit is None or start < limit):
        end = start + _HEADER.size + _HEADER.unpack_from(buffer, start)[0]
        values.append(pickle.loads(memoryview(buffer)[start + _HEADER.size : end]))
        start = end
    del buffer[:start]
    return values


def _whole_message(buffer: bytearray, start: int = 0) -> bool:
    if len(buffer) - start < _HEADER.size:
        return False
    return len(buffer) - start - _HEADER.size >= _HEADER.unpack_from(buffer, start)[0]


def _portable(fn: Callable) -> Callable:
    """Functions go to the database process by name: a lambda or a nested function would
    fail there, so it fails here, where the mistake is."""
    inner = fn.func if isinstance(fn, functools.partial) else fn
    if "<" in getattr(inner, "__qualname__", "<"):
        raise TypeError(f"{inner!r}: the store runs module-level functions only")
    return fn


class Store:
    """Applies database work in batches: everything queued during a turn of the event loop
    (or a few milliseconds of them, see BATCH_INTERVAL_S) goes into one transaction. `write`
    queues a statement, `submit` a function of the Db whose result (or exception) goes to a
    callback once the batch is committed, `call` is `submit` for coroutines, and
    `after_commit` runs a callback once everything queued before it is committed. The
    database process commits the batches waiting for it together."""

    def __init__(self, url: str, log_days: float = 0):
        self._url = url
        self._log_days = log_days  # the frame log's retention (0: keep every frame)
        self._process: asyncio.subprocess.Process | None = None
        self._transport: asyncio.Transport | None = None
        # The next batch: statements and calls, and the callbacks of its calls and commit
        # markers, in order (statements have none: only calls get a result back).
        self._items: list[Item] = []
        self._callbacks: list[Done] = []
        # Batches sent and not yet committed: their callbacks and how many items they hold
        self._in_flight: collections.deque[tuple[list[Done], int]] = collections.deque()
        self._items_in_flight = 0
        self._opened: asyncio.Future | None = None
        self._restart: asyncio.Future | None = None  # a new process is being started
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None  # starts the next batch
        self._last_batch = 0.0  # loop time the last batch started
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0
        self.full = False  # BACKLOG_HIGH bytes wait for the database process
        self._when_drained: list[Callable[[], None]] = []

    async def open(self) -> None:
        """Start the database process; raises what opening the database raised there."""
        self._loop = asyncio.get_running_loop()
        try:
            await self._start_process()
        except BaseException:
            self._closing = True
            await self._end()
            raise

    async def _start_process(self, timeout: float | None = None) -> None:
        """Start the database process; within `timeout` seconds it must have opened the
        database (none for the first start: its migrations may take long)."""
        assert self._loop is not None
        ours, theirs = socket.socketpair()
        with theirs:  # the process's end: its copy is all it needs
            process = self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "host.cs.store", self._url, str(theirs.fileno()),
                str(self._log_days), pass_fds=(theirs.fileno(),),
            )  # fmt: skip
        self._opened = self._loop.create_future()
        try:
            self._transport, _ = await self._loop.create_connection(
                lambda: _Channel(self), sock=ours
            )
            self._transport.set_write_buffer_limits(BACKLOG_HIGH, BACKLOG_LOW)
            await asyncio.wait_for(self._opened, timeout)
        except BaseException:
            ours.close()  # the process sees the end of file, if the transport did not start
            if self._transport is not None:
                self._transport.close()
                self._transport = None  # its end, when it comes, is not the current one's
            if process.returncode is None:
                process.kill()  # stuck opening (a database server that never answers)
            raise

    async def _restarted(self, dead: asyncio.subprocess.Process | None) -> None:
        """Start a new database process in place of one that died, again and again until
        one opens the database (it may be down for a while); what is queued meanwhile goes
        to it, or fails at each failed start, so that it does not pile up."""
        if dead is not None:
            await dead.wait()
        delay = RESTART_DELAY_S
        try:
            while True:
                try:
                    await self._start_process(RESTART_TIMEOUT_S)
                    break
                except Exception as error:  # noqa: BLE001 - tried again
                    log.error(
                        "the database process could not be started again (next try in %g s): %s",
                        delay,
                        error,
                    )
                    self._fail_queued(StorageError(f"{ENDED}: {error}"))
                await asyncio.sleep(delay)
                delay = min(2 * delay, RESTART_MAX_DELAY_S)
        finally:
            self._restart = None
        if self._items:
            self._wake()

    async def close(self) -> None:
        """Commit what is queued, then end the database process. Should it be down (being
        started again), what is queued fails."""
        self._closing = True
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart
        try:
            if self._transport is not None and not self._transport.is_closing():
                await self.flush()
        finally:
            self._fail_queued(StorageError(ENDED))
            await self._end()

    async def _end(self) -> None:
        if self._transport is not None:
            self._transport.close()  # end of file: the process exits
        if self._process is not None:
            await self._process.wait()
            self._process = None

    @property
    def queued(self) -> int:
        """Statements and calls not committed yet: waiting for their batch or in the
        database process's hands (the dashboard's metric)."""
        return len(self._items) + self._items_in_flight

    def when_drained(self, fn: Callable[[], None]) -> None:
        """Call `fn` once the Store is no longer `full`."""
        self._when_drained.append(fn)

    def _drained(self) -> None:
        self.full = False
        waiting, self._when_drained = self._when_drained, []
        for fn in waiting:
            fn()

    def _wake(self) -> None:
        """Start a batch when one is due: at once when BATCH_ITEMS are waiting (the loop
        is busy, and the database process works meanwhile), else BATCH_INTERVAL_S after
        the last one."""
        if len(self._items) >= BATCH_ITEMS:
            self._start_batch()
        else:
            self._arm()

    def _arm(self) -> None:
        """Start a batch BATCH_INTERVAL_S after the last one, unless one is due already."""
        if self._timer is None:
            assert self._loop is not None, "Store.open() first"
            delay = max(0.0, self._last_batch + BATCH_INTERVAL_S - self._loop.time())
            self._timer = self._loop.call_later(delay, self._start_batch)

    # Statements only arm the timer: a batch starts at a call or a commit marker, so that a
    # message's statements and its marker go in the same batch (see `after_commit`).
    def write(self, sql: str, params: tuple) -> None:
        self._items.append((sql, params))
        self._arm()

    def write_many(self, sql: str, rows: list[tuple]) -> None:
        self._items.extend([(sql, row) for row in rows])
        self._arm()

    def mark(self) -> int:
        """Where the next statement goes: give it to `after_commit` as `since`."""
        return len(self._items)

    def submit(self, fn: Callable[..., Any], args: tuple, done: Done) -> None:
        self._items.append((_portable(fn), args))
        self._callbacks.append(done)
        self._wake()

    def after_commit(self, done: Done, since: int | None = None) -> None:
        """`done` runs once everything queued before is committed. With `since` (a `mark`),
        the statements queued from there are its own: if one of them fails, so does it
        (a message is answered "stored" only if its rows are)."""
        own = 0 if since is None else max(0, len(self._items) - since)
        self._items.append((None, own))
        self._callbacks.append(done)
        self._wake()

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        if kwargs:
            fn = functools.partial(fn, **kwargs)
        self.submit(fn, args, functools.partial(_settle, future))
        return await future

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        future = asyncio.get_running_loop().create_future()
        self.after_commit(functools.partial(_settle, future))
        await future

    def _start_batch(self) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._restart is not None:
            return  # the new database process takes them once it is up
        self._last_batch = self._loop.time()
        batch, self._items = self._items, []
        callbacks, self._callbacks = self._callbacks, []
        if self._transport is None or self._transport.is_closing():
            return self._fail(callbacks, StorageError(ENDED))
        try:
            message = _message(batch)
        except Exception as error:  # noqa: BLE001 - an argument that cannot be pickled
            log.error("a database batch could not be sent: %r", error)
            failed = StorageError(f"could not be sent to the database process: {error!r}")
            return self._fail(callbacks, failed)
        self._in_flight.append((callbacks, len(batch)))
        self._items_in_flight += len(batch)
        self._transport.write(message)
        return None

    def _fail_queued(self, error: Exception) -> None:
        """What waits for a batch fails with `error`."""
        callbacks, self._items, self._callbacks = self._callbacks, [], []
        self._fail(callbacks, error)

    def _fail(self, callbacks: list[Done], error: Exception) -> None:
        self._finish(callbacks, [(False, error)] * len(callbacks))

    def _finish(self, callbacks: list[Done], results: list[Result]) -> None:
        self.batches += 1
        for done, (ok, value) in zip(callbacks, results, strict=True):
            try:
                done(ok, value)
            except Exception:  # noqa: BLE001 - one failing callback must not stop the rest
                log.exception("database callback failed")

    # ---- from the database process (through _Channel) ------------------------------------

    def _on_message(self, value: Any) -> None:
        if self._opened is not None and not self._opened.done():
            ok, error = value
            if ok:
                self._opened.set_result(None)
            else:
                self._opened.set_exception(error)
        else:
            self._finish(self._committed(), value)

    def _on_lost(self, transport: asyncio.BaseTransport) -> None:
        """The socket closed: at our end of file (close), or because the process died. Then
        what it held fails (it may or may not be committed) and a new process starts."""
        if transport is not self._transport:
            return  # a process that failed to start: _restarted tries again
        if self.full:  # what the socket held is gone with it
            self._drained()
        error = StorageError(ENDED)
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(error)
            return
        if not self._closing and self._restart is None:
            log.error("the database process ended; starting another")
            self._restart = asyncio.ensure_future(self._restarted(self._process))
        while self._in_flight:
            callbacks = self._committed()
            self._fail(callbacks, error)

    def _committed(self) -> list[Done]:
        """The oldest batch in flight, done with (committed or failed): its callbacks."""
        callbacks, items = self._in_flight.popleft()
        self._items_in_flight -= items
        return callbacks


class _Channel(asyncio.Protocol):
    """The event loop's end of the socket to the database process: whole messages only."""

    def __init__(self, store: Store):
        self.store = store
        self.buffer = bytearray()
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def pause_writing(self) -> None:  # BACKLOG_HIGH bytes wait in the socket's buffer
        self.store.full = True

    def resume_writing(self) -> None:  # down to BACKLOG_LOW
        if self.transport is self.store._transport:
            self.store._drained()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        for value in _take(self.buffer):
            self.store._on_message(value)

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.transport is not None
        self.store._on_lost(self.transport)


def _settle(future: asyncio.Future, ok: bool, value: Any) -> None:
    if future.done():  # its waiter was cancelled
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


# ---- the database process -----------------------------------------------------------------


def run_batches(db: Db, batches: list[list[Item]]) -> list[list[Result]]:
    """One transaction for all the batches, and for each batch the results of its calls
    and commit markers (statements have none). If any item fails, each item runs in its own
    transaction, so that one bad item costs only its own result: a failed statement's is
    the failure of the commit marker it belongs to (`Store.after_commit`), or a log entry."""
    try:
        results = [_run(db, batch) for batch in batches]
        db.commit()
        return results
    except Exception:  # noqa: BLE001 - isolate the failing item, keep the others
        db.rollback()
    return [_one_by_one(db, batch) for batch in batches]


def _one_by_one(db: Db, batch: list[Item]) -> list[Result]:
    """The batch's items each in a transaction of their own, a commit marker with its own
    statements: all of them or none."""
    results: list[Result] = []
    waiting: list[Item] = []  # statements not run yet
    for what, args in batch:
        if isinstance(what, str):
            waiting.append((what, args))
            continue
        others = max(0, len(waiting) - (args if what is None else 0))
        _statements_alone(db, waiting[:others])
        results.append(_attempt(db, [*waiting[others:], (what, args)]))
        waiting = []
    _statements_alone(db, waiting)
    return results


def _statements_alone(db: Db, statements: list[Item]) -> None:
    for statement in statements:
        ok, error = _attempt(db, [statement])
        if not ok:
            log.error("a statement failed: %r: %s", statement, error)


def _attempt(db: Db, items: list[Item]) -> Result:
    """`items` in one transaction: the last one's result, or the failure."""
    try:
        results = _run(db, items)
        db.commit()
        return results[-1] if results else (True, None)
    except Exception as error:  # noqa: BLE001 - reported to its caller
        db.rollback()
        return (False, error)


def _run(db: Db, batch: list[Item]) -> list[Result]:
    """Statements queued between two calls run as one executemany per statement (rows of
    one statement keep their order); a call sees every write queued before it. Commit
    markers (None) only wait for the commit."""
    results: list[Result] = []
    writes: dict[str, list[tuple]] = {}
    for what, args in batch:
        if isinstance(what, str):
            writes.setdefault(what, []).append(args)
            continue
        if what is not None:
            for sql, rows in writes.items():
                db.executemany(sql, rows)
            writes = {}
            results.append((True, what(db, *args)))
        else:
            results.append((True, None))
    for sql, rows in writes.items():
        db.executemany(sql, rows)
    return results


def _sendable(results: list[Result]) -> bytes:
    """The message for a batch's results. Errors go as StorageError with the original's
    type and text: a driver's own exception may not unpickle on the other side; a result
    that cannot be pickled goes as an error too."""
    results = [(ok, value if ok else _error(value)) for ok, value in results]
    try:
        return _message(results)
    except Exception:  # noqa: BLE001 - find the result that does not pickle
        return _message([_pickles(result) for result in results])


def _error(error: BaseException) -> StorageError:
    return StorageError(f"{type(error).__name__}: {error}")


def _pickles(result: Result) -> Result:
    try:
        pickle.dumps(result)
        return result
    except Exception as error:  # noqa: BLE001 - reported to its caller
        return (False, StorageError(f"the result could not be sent back: {error!r}"))


def _upkeep(db: Db, step: Callable[..., bool], idle_s: float, *args: Any) -> float:
    """One step of the frame log's upkeep (index_log, prune_log) in a transaction of its own;
    returns the seconds until the next: INDEX_INTERVAL_S while a backlog lasts."""
    try:
        more = step(db, *args)
        db.commit()  # also ends the transaction that looked (PostgreSQL opens one)
        return INDEX_INTERVAL_S if more else idle_s
    except Exception:  # noqa: BLE001 - a later step does it again
        db.rollback()
        log.exception("%s failed", step.__name__)
        return INDEX_RETRY_S


class _Inbox(threading.Thread):
    """Reads the socket as the server writes it, so that no batch waits in the server while
    the database commits. (Read only between transactions, the socket's buffer, about two
    batches, filled during each commit and the rest waited in the server: measured, the
    database process idle a third of the time while thousands of messages waited.)"""

    def __init__(self, channel: socket.socket):
        super().__init__(name="inbox", daemon=True)
        self._channel = channel
        self._received = bytearray()
        self._ended = False
        self._arrived = threading.Condition()

    def run(self) -> None:
        try:
            while True:
                with self._arrived:
                    while len(self._received) >= INBOX_BYTES:  # until the next take
                        self._arrived.wait()
                data = self._channel.recv(1 << 20)
                if not data:
                    break
                with self._arrived:
                    self._received += data
                    self._arrived.notify()
        except OSError:  # the server is gone
            pass
        finally:  # whatever ended it, the database process must not wait for more
            with self._arrived:
                self._ended = True
                self._arrived.notify()

    def take(self, timeout: float) -> bytearray | None:
        """What arrived since the last take, waiting up to `timeout` seconds for something;
        None once the server has closed the socket and everything is taken."""
        with self._arrived:
            if not self._received and not self._ended:
                self._arrived.wait(timeout)
            if self._ended and not self._received:
                return None
            data, self._received = self._received, bytearray()
            self._arrived.notify()  # room again, if the reader waits for it
            return data


def serve(url: str, channel: socket.socket, log_days: float) -> None:
    """Open the database, then run the batches received (those waiting, up to GROUP_BYTES,
    in one transaction) and send back their results, until the server closes the socket.
    Between them, index the frame log and delete frames older than `log_days` (if set)."""
    # The server ends this process by closing the socket, after its last batch; a Ctrl-C or
    # SIGTERM sent to the whole process group must not cut that batch off.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        db = Db(url)
    except Exception as error:  # noqa: BLE001 - reported to the server
        channel.sendall(_message((False, _error(error))))
        return
    channel.sendall(_message((True, None)))
    inbox = _Inbox(channel)
    inbox.start()
    received = bytearray()
    next_index = time.monotonic() + INDEX_INTERVAL_S
    next_prune = next_index if log_days else float("inf")
    while True:
        # Batches left over by the last group (GROUP_BYTES) go next without waiting; the
        # inbox is taken only once they are less than a group, or they would pile up here.
        leftover = _whole_message(received)
        upkeep = min(next_index, next_prune)
        if leftover and len(received) >= GROUP_BYTES:
            data = b""
        else:
            data = inbox.take(0.0 if leftover else max(0.0, upkeep - time.monotonic()))
        if data is None and not leftover:
            break
        received += data or b""
        batches = _take(received, GROUP_BYTES)
        if batches:
            try:
                channel.sendall(b"".join(map(_sendable, run_batches(db, batches))))
            except OSError:  # the server is gone
                break
        if time.monotonic() >= next_index:
            next_index = time.monotonic() + _upkeep(db, index_log, INDEX_INTERVAL_S)
        if time.monotonic() >= next_prune:
            next_prune = time.monotonic() + _upkeep(db, prune_log, PRUNE_INTERVAL_S, log_days)
    db.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    serve(sys.argv[1], socket.socket(fileno=int(sys.argv[2])), float(sys.argv[3]))
