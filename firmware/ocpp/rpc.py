# OCPP-J RPC over a Link: our CALLs one at a time with a time-out, and the central system's
# CALLs answered by `answer`, also while our own CALL waits for its answer.
#
# A receiver task, started with the Rpc, reads the link for the whole life of the program
# (across reconnects) and never dies on bad input: malformed messages get the CALLERROR the
# OCPP-J table calls for, a failure in `answer` becomes InternalError, and answers to ids we
# are not waiting for are dropped.
import asyncio

from protocol import ocppj

WATCH_MS = 250  # how often the time-out of our CALL is checked (real time, as the peer's)


class CallError(Exception):
    """The central system answered our CALL with a CALLERROR (or with an unreadable answer)."""

    def __init__(self, code, description="", details=None):
        super().__init__(code, description)
        self.code = code
        self.description = description
        self.details = details


class CallTimeout(Exception):
    """No answer within the time-out."""


class Offline(CallTimeout):
    """The link is down: the CALL was not sent, or its answer can no longer come."""


class Rpc:
    def __init__(self, link, board, answer=None):
        self.link = link
        self.board = board
        # answer(action, payload) -> the result payload of an inbound CALL; it raises
        # ocppj.RpcError to answer with that CALLERROR (None: every CALL is NotImplemented)
        self.answer = answer
        self._lock = asyncio.Lock()  # one outstanding CALL
        self._answered = asyncio.Event()
        self._uid = None  # id of our outstanding CALL
        self._action = None
        self._due_ms = 0  # real time its answer is due by
        self._outcome = None  # its result payload, or the exception to raise
        asyncio.create_task(self._receive())
        # One task watches every CALL's time-out: a timer task per CALL would leave its
        # allocations scattered through the heap.
        asyncio.create_task(self._watch())

    async def call(self, action, payload, timeout_s=30):
        """Send a CALL and return the CALLRESULT payload. Raises CallError, CallTimeout, or
        Offline (a CallTimeout) when the link is or goes down."""
        async with self._lock:
            if not self.link.connected:
                raise Offline(action)
            uid = ocppj.new_uid()
            self._uid = uid
            self._action = action
            self._due_ms = self.board.ticks_add(self.board.real_ms(), int(timeout_s * 1000))
            self._outcome = None
            self._answered.clear()
            try:
                await self.link.send(ocppj.encode_call(uid, action, payload))
                await self._answered.wait()
            except Exception:
                raise Offline(action) from None
            finally:
                self._uid = None
            if isinstance(self._outcome, Exception):
                raise self._outcome
            return self._outcome

    async def _watch(self):
        while True:
            await self.board.real_sleep_ms(WATCH_MS)  # the peer answers in real time
            board = self.board
            if self._uid is not None and board.ticks_diff(board.real_ms(), self._due_ms) >= 0:
                self._finish(self._uid, CallTimeout(self._action))

    def _finish(self, uid, outcome):
        if uid is not None and uid == self._uid:
            self._uid = None
            self._outcome = outcome
            self._answered.set()

    async def _receive(self):
        while True:
            try:
                text = await self.link.recv()
            except Exception:  # the connection ended (LinkClosed) or the read failed
                self._finish(self._uid, Offline("link closed"))
                continue
            await self._dispatch(text)

    async def _dispatch(self, text):
        try:
            message = ocppj.decode(text)
        except ocppj.RpcError as e:
            if e.message_type in (ocppj.CALLRESULT, ocppj.CALLERROR):
                self._finish(e.uid, CallError(e.code, e.description))
            else:
                await self._reply(ocppj.encode_error(e.uid or ocppj.UNKNOWN_UID, e.code,
                                                     e.description))
            return
        kind = message[0]
        if kind == ocppj.CALL:
            await self._reply(self._answer(message[1], message[2], message[3]))
        elif kind == ocppj.CALLRESULT:
            self._finish(message[1], message[2])
        else:
            self._finish(message[1], CallError(message[2], message[3], message[4]))

    def _answer(self, uid, action, payload):
        try:
            if self.answer is None:
                raise ocppj.RpcError(ocppj.NOT_IMPLEMENTED, None, "unknown action")
            return ocppj.encode_result(uid, self.answer(action, payload))
        except ocppj.RpcError as e:
            return ocppj.encode_error(uid, e.code, e.description, e.details)
        except Exception as e:  # a bug in `answer` must not take the link down
            return ocppj.encode_error(uid, ocppj.INTERNAL_ERROR, type(e).__name__)

    async def _reply(self, text):
        try:
            await self.link.send(text)
        except Exception:
            pass  # the link is down: the central system will time out and ask again
