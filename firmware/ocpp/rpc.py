# OCPP-J RPC over a Link: our CALLs one at a time with a time-out, and the central system's
# CALLs answered by registered handlers, also while our own CALL waits for its answer.
#
# A receiver task, started with the Rpc, reads the link for the whole life of the program
# (across reconnects) and never dies on bad input: malformed messages get the CALLERROR the
# OCPP-J table calls for, a handler's failure becomes InternalError, and answers to ids we
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
    def __init__(self, link, board):
        self.link = link
        self.board = board
        self._handlers = {}
        # answer(action, payload) for actions without a handler of their own; raises
        # ocppj.RpcError (e.g. NotImplemented) like a handler
        self.answer = None
        self._lock = asyncio.Lock()  # one outstanding CALL
        self._answered = asyncio.Event()
        self._uid = None  # id of our outstanding CALL
        self._action = None
        self._left_ms = 0  # time left for its answer
        self._outcome = None  # its result payload, or the exception to raise
        asyncio.create_task(self._receive())
        # One task watches every CALL's time-out: a timer task per CALL would leave its
        # allocations scattered through the heap.
        asyncio.create_task(self._watch())

    def handle(self, action, fn):
        """Answer inbound CALLs of `action` with fn(payload) -> result payload; fn may raise
        ocppj.RpcError to answer with that CALLERROR."""
        self._handlers[action] = fn

    async def call(self, action, payload, timeout_s=30):
        """Send a CALL and return the CALLRESULT payload. Raises CallError, CallTimeout, or
        Offline (a CallTimeout) when the link is or goes down."""
        async with self._lock:
            if not self.link.connected:
                raise Offline(action)
            uid = ocppj.new_uid()
            self._uid = uid
            self._action = action
            self._left_ms = int(timeout_s * 1000) + WATCH_MS  # (the watch's first tick is early)
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
            if self._uid is not None:
                self._left_ms -= WATCH_MS
                if self._left_ms <= 0:
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
        handler = self._handlers.get(action)
        try:
            if handler is not None:
                return ocppj.encode_result(uid, handler(payload))
            if self.answer is None:
                raise ocppj.RpcError(ocppj.NOT_IMPLEMENTED, None, "unknown action")
            return ocppj.encode_result(uid, self.answer(action, payload))
        except ocppj.RpcError as e:
            return ocppj.encode_error(uid, e.code, e.description, e.details)
        except Exception as e:  # a bug in a handler must not take the link down
            return ocppj.encode_error(uid, ocppj.INTERNAL_ERROR, type(e).__name__)

    async def _reply(self, text):
        try:
            await self.link.send(text)
        except Exception:
            pass  # the link is down: the central system will time out and ask again
