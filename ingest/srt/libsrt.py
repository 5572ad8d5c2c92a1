"""A ctypes binding of Debian's libsrt 1.5 (`libsrt.so.1.5`): only what the SRT ingest
server uses.

Every call that fails raises `SrtError` carrying libsrt's own code and message
(`srt_getlasterror`, which libsrt keeps per thread). The constants and the layout of
`CBytePerfMon` are those of libsrt 1.5.1's `srt.h` (checked against the C compiler's
`sizeof`/`offsetof`: 496 bytes, `msRTT` at 328, `mbpsBandwidth` at 336).

`startup()`/`cleanup()` are reference-counted: libsrt's `srt_startup`/`srt_cleanup`
run once for however many users the process has.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import threading
from typing import Any

SONAME = "libsrt.so.1.5"

SRTSOCKET = ctypes.c_int
INVALID_SOCK = -1
ERROR = -1

# SRT_SOCKOPT (srt.h)
SRTO_SNDSYN = 1
SRTO_RCVSYN = 2
SRTO_RCVBUF = 6
SRTO_RCVTIMEO = 14
SRTO_LATENCY = 23
SRTO_PASSPHRASE = 26
SRTO_PBKEYLEN = 27
SRTO_STREAMID = 46
SRTO_TRANSTYPE = 50
SRTO_ENFORCEDENCRYPTION = 53
SRTO_PEERIDLETIMEO = 55

SRTT_LIVE = 0  # SRT_TRANSTYPE

LOG_CRIT = 2  # syslog levels, for set_log_level
LOG_ERR = 3
LOG_WARNING = 4

# SRT_SOCKSTATUS
SRTS_INIT = 1
SRTS_OPENED = 2
SRTS_LISTENING = 3
SRTS_CONNECTING = 4
SRTS_CONNECTED = 5
SRTS_BROKEN = 6
SRTS_CLOSING = 7
SRTS_CLOSED = 8
SRTS_NONEXIST = 9

# SRT_ERRNO: 1000 * major + minor
SRT_ECONNREJ = 1002
SRT_ESCLOSED = 1005
SRT_ECONNLOST = 2001
SRT_ENOCONN = 2002
SRT_EINVSOCK = 5004
SRT_EASYNCRCV = 6002
SRT_ETIMEOUT = 6003

# SRT_EPOLL_OPT
SRT_EPOLL_IN = 0x1
SRT_EPOLL_ERR = 0x8

# Reject reasons the application sets (access_control.h): 1000 + an HTTP-like status.
SRT_REJC_PREDEFINED = 1000
SRT_REJX_BAD_REQUEST = 1400
SRT_REJX_OVERLOAD = 1402  # "exceeded credits for accessing the service"
SRT_REJX_FORBIDDEN = 1403
SRT_REJX_NOTFOUND = 1404
SRT_REJX_BAD_MODE = 1405
SRT_REJX_ISE = 1500
SRT_REJX_DOWN = 1503  # the service is unavailable (e.g. at capacity)

LIVE_MAX_PAYLOAD_BYTES = 1456  # SRT_LIVE_MAX_PLSIZE: a receive buffer needs at least this
PASSPHRASE_MIN_CHARS = 10
PASSPHRASE_MAX_CHARS = 79


class SrtError(Exception):
    """A libsrt call failed; `code` is its SRT_ERRNO, the message libsrt's own text."""

    def __init__(self, call: str, code: int, message: str) -> None:
        super().__init__(f"{call}: {message} (SRT error {code})")
        self.call = call
        self.code = code
        self.message = message


class CBytePerfMon(ctypes.Structure):
    """`struct CBytePerfMon` of libsrt 1.5 (`SRT_TRACEBSTATS`), field for field."""

    _fields_ = [
        # global measurements
        ("msTimeStamp", ctypes.c_int64),
        ("pktSentTotal", ctypes.c_int64),
        ("pktRecvTotal", ctypes.c_int64),
        ("pktSndLossTotal", ctypes.c_int),
        ("pktRcvLossTotal", ctypes.c_int),
        ("pktRetransTotal", ctypes.c_int),
        ("pktSentACKTotal", ctypes.c_int),
        ("pktRecvACKTotal", ctypes.c_int),
        ("pktSentNAKTotal", ctypes.c_int),
        ("pktRecvNAKTotal", ctypes.c_int),
        ("usSndDurationTotal", ctypes.c_int64),
        ("pktSndDropTotal", ctypes.c_int),
        ("pktRcvDropTotal", ctypes.c_int),
        ("pktRcvUndecryptTotal", ctypes.c_int),
        ("byteSentTotal", ctypes.c_uint64),
        ("byteRecvTotal", ctypes.c_uint64),
        ("byteRcvLossTotal", ctypes.c_uint64),
        ("byteRetransTotal", ctypes.c_uint64),
        ("byteSndDropTotal", ctypes.c_uint64),
        ("byteRcvDropTotal", ctypes.c_uint64),
        ("byteRcvUndecryptTotal", ctypes.c_uint64),
        # local measurements (since the last clear; this server never clears)
        ("pktSent", ctypes.c_int64),
        ("pktRecv", ctypes.c_int64),
        ("pktSndLoss", ctypes.c_int),
        ("pktRcvLoss", ctypes.c_int),
        ("pktRetrans", ctypes.c_int),
        ("pktRcvRetrans", ctypes.c_int),
        ("pktSentACK", ctypes.c_int),
        ("pktRecvACK", ctypes.c_int),
        ("pktSentNAK", ctypes.c_int),
        ("pktRecvNAK", ctypes.c_int),
        ("mbpsSendRate", ctypes.c_double),
        ("mbpsRecvRate", ctypes.c_double),
        ("usSndDuration", ctypes.c_int64),
        ("pktReorderDistance", ctypes.c_int),
        ("pktRcvAvgBelatedTime", ctypes.c_double),
        ("pktRcvBelated", ctypes.c_int64),
        ("pktSndDrop", ctypes.c_int),
        ("pktRcvDrop", ctypes.c_int),
        ("pktRcvUndecrypt", ctypes.c_int),
        ("byteSent", ctypes.c_uint64),
        ("byteRecv", ctypes.c_uint64),
        ("byteRcvLoss", ctypes.c_uint64),
        ("byteRetrans", ctypes.c_uint64),
        ("byteSndDrop", ctypes.c_uint64),
        ("byteRcvDrop", ctypes.c_uint64),
        ("byteRcvUndecrypt", ctypes.c_uint64),
        # instant measurements
        ("usPktSndPeriod", ctypes.c_double),
        ("pktFlowWindow", ctypes.c_int),
        ("pktCongestionWindow", ctypes.c_int),
        ("pktFlightSize", ctypes.c_int),
        ("msRTT", ctypes.c_double),
        ("mbpsBandwidth", ctypes.c_double),
        ("byteAvailSndBuf", ctypes.c_int),
        ("byteAvailRcvBuf", ctypes.c_int),
        ("mbpsMaxBW", ctypes.c_double),
        ("byteMSS", ctypes.c_int),
        ("pktSndBuf", ctypes.c_int),
        ("byteSndBuf", ctypes.c_int),
        ("msSndBuf", ctypes.c_int),
        ("msSndTsbPdDelay", ctypes.c_int),
        ("pktRcvBuf", ctypes.c_int),
        ("byteRcvBuf", ctypes.c_int),
        ("msRcvBuf", ctypes.c_int),
        ("msRcvTsbPdDelay", ctypes.c_int),
        ("pktSndFilterExtraTotal", ctypes.c_int),
        ("pktRcvFilterExtraTotal", ctypes.c_int),
        ("pktRcvFilterSupplyTotal", ctypes.c_int),
        ("pktRcvFilterLossTotal", ctypes.c_int),
        ("pktSndFilterExtra", ctypes.c_int),
        ("pktRcvFilterExtra", ctypes.c_int),
        ("pktRcvFilterSupply", ctypes.c_int),
        ("pktRcvFilterLoss", ctypes.c_int),
        ("pktReorderTolerance", ctypes.c_int),
        # new in 1.5.0
        ("pktSentUniqueTotal", ctypes.c_int64),
        ("pktRecvUniqueTotal", ctypes.c_int64),
        ("byteSentUniqueTotal", ctypes.c_uint64),
        ("byteRecvUniqueTotal", ctypes.c_uint64),
        ("pktSentUnique", ctypes.c_int64),
        ("pktRecvUnique", ctypes.c_int64),
        ("byteSentUnique", ctypes.c_uint64),
        ("byteRecvUnique", ctypes.c_uint64),
    ]


class _EpollEvent(ctypes.Structure):
    _fields_ = [("fd", SRTSOCKET), ("events", ctypes.c_int)]


class _SockaddrStorage(ctypes.Structure):
    _fields_ = [("ss_family", ctypes.c_ushort), ("data", ctypes.c_char * 126)]


# int srt_listen_callback_fn(void* opaq, SRTSOCKET ns, int hsversion,
#                            const struct sockaddr* peeraddr, const char* streamid)
ListenCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, SRTSOCKET, ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
)


def _signatures(lib: ctypes.CDLL) -> None:
    c_int, c_void_p, c_char_p = ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
    table: dict[str, tuple[Any, list[Any]]] = {
        "srt_startup": (c_int, []),
        "srt_cleanup": (c_int, []),
        "srt_getversion": (ctypes.c_uint32, []),
        "srt_setloglevel": (None, [c_int]),
        "srt_create_socket": (SRTSOCKET, []),
        "srt_bind": (c_int, [SRTSOCKET, c_void_p, c_int]),
        "srt_listen": (c_int, [SRTSOCKET, c_int]),
        "srt_accept": (SRTSOCKET, [SRTSOCKET, c_void_p, ctypes.POINTER(c_int)]),
        "srt_listen_callback": (c_int, [SRTSOCKET, ListenCallback, c_void_p]),
        "srt_close": (c_int, [SRTSOCKET]),
        "srt_getsockname": (c_int, [SRTSOCKET, c_void_p, ctypes.POINTER(c_int)]),
        "srt_getpeername": (c_int, [SRTSOCKET, c_void_p, ctypes.POINTER(c_int)]),
        "srt_getsockflag": (c_int, [SRTSOCKET, c_int, c_void_p, ctypes.POINTER(c_int)]),
        "srt_setsockflag": (c_int, [SRTSOCKET, c_int, c_void_p, c_int]),
        "srt_recvmsg": (c_int, [SRTSOCKET, c_void_p, c_int]),
        "srt_bstats": (c_int, [SRTSOCKET, ctypes.POINTER(CBytePerfMon), c_int]),
        "srt_getsockstate": (c_int, [SRTSOCKET]),
        "srt_getlasterror": (c_int, [ctypes.POINTER(c_int)]),
        "srt_getlasterror_str": (c_char_p, []),
        "srt_setrejectreason": (c_int, [SRTSOCKET, c_int]),
        "srt_getrejectreason": (c_int, [SRTSOCKET]),
        "srt_rejectreason_str": (c_char_p, [c_int]),
        "srt_epoll_create": (c_int, []),
        "srt_epoll_add_usock": (c_int, [c_int, SRTSOCKET, ctypes.POINTER(c_int)]),
        "srt_epoll_uwait": (c_int, [c_int, ctypes.POINTER(_EpollEvent), c_int, ctypes.c_int64]),
        "srt_epoll_release": (c_int, [c_int]),
    }
    for name, (restype, argtypes) in table.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes


_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_users = 0


def _lib() -> ctypes.CDLL:
    global _library
    if _library is None:
        with _lock:
            if _library is None:
                try:
                    library = ctypes.CDLL(SONAME)
                except OSError as exc:
                    raise SrtError("load", -1, f"{SONAME} not loadable: {exc}") from exc
                _signatures(library)
                _library = library
    return _library


def _fail(call: str) -> SrtError:
    lib = _lib()
    code = int(lib.srt_getlasterror(None))
    raw = lib.srt_getlasterror_str()
    message = raw.decode("utf-8", "replace") if raw else "unknown error"
    return SrtError(call, code, message)


def _check(call: str, result: int) -> int:
    if result == ERROR:
        raise _fail(call)
    return result


def startup() -> None:
    """Take a reference on libsrt (srt_startup on the first one)."""
    global _users
    lib = _lib()
    with _lock:
        if _users == 0 and lib.srt_startup() < 0:
            raise _fail("srt_startup")
        _users += 1


def cleanup() -> None:
    """Give one reference back (srt_cleanup with the last one). Blocks while libsrt
    stops its threads: not on the event loop."""
    global _users
    lib = _lib()
    with _lock:
        if _users == 0:
            return
        _users -= 1
        if _users == 0:
            lib.srt_cleanup()


def set_log_level(level: int) -> None:
    """libsrt's own logging (to stderr) from `level` (a syslog level) up."""
    _lib().srt_setloglevel(level)


def version() -> str:
    number = int(_lib().srt_getversion())
    return f"{number >> 16}.{(number >> 8) & 0xFF}.{number & 0xFF}"


def create_socket() -> int:
    return _check("srt_create_socket", int(_lib().srt_create_socket()))


def _sockaddr(host: str, port: int) -> bytes:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            packed = socket.inet_pton(family, host)
        except OSError:
            continue
        if family == socket.AF_INET:
            return struct.pack("=H", family) + struct.pack("!H", port) + packed + bytes(8)
        return struct.pack("=H", family) + struct.pack("!HI", port, 0) + packed + bytes(4)
    raise SrtError("bind", -1, f"not an IP address: {host!r}")


def parse_sockaddr(address: int | None) -> tuple[str, int]:
    """(ip, port) of a `struct sockaddr*` (IPv4 or IPv6); ("", 0) for anything else."""
    if not address:
        return "", 0
    family = ctypes.c_ushort.from_address(address).value
    if family == socket.AF_INET:
        raw = ctypes.string_at(address, 16)
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), struct.unpack("!H", raw[2:4])[0]
    if family == socket.AF_INET6:
        raw = ctypes.string_at(address, 28)
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), struct.unpack("!H", raw[2:4])[0]
    return "", 0


def bind(sock: int, host: str, port: int) -> None:
    name = _sockaddr(host, port)
    buffer = ctypes.create_string_buffer(name, len(name))
    _check("srt_bind", int(_lib().srt_bind(sock, buffer, len(name))))


def listen(sock: int, backlog: int) -> None:
    _check("srt_listen", int(_lib().srt_listen(sock, backlog)))


def set_listen_callback(sock: int, callback: Any) -> None:
    """Install a `ListenCallback` object; the caller keeps a reference to it for as long
    as the listener lives (ctypes does not)."""
    _check("srt_listen_callback", int(_lib().srt_listen_callback(sock, callback, None)))


def accept(sock: int) -> tuple[int, tuple[str, int]]:
    """The next connected socket and its peer's (ip, port)."""
    storage = _SockaddrStorage()
    length = ctypes.c_int(ctypes.sizeof(storage))
    accepted = int(_lib().srt_accept(sock, ctypes.byref(storage), ctypes.byref(length)))
    _check("srt_accept", accepted)
    return accepted, parse_sockaddr(ctypes.addressof(storage))


def local_port(sock: int) -> int:
    storage = _SockaddrStorage()
    length = ctypes.c_int(ctypes.sizeof(storage))
    _check(
        "srt_getsockname",
        int(_lib().srt_getsockname(sock, ctypes.byref(storage), ctypes.byref(length))),
    )
    return parse_sockaddr(ctypes.addressof(storage))[1]


def close(sock: int) -> None:
    """Close a socket; closing one already gone is not an error worth raising."""
    _lib().srt_close(sock)


def set_int(sock: int, option: int, value: int) -> None:
    number = ctypes.c_int(value)
    result = _lib().srt_setsockflag(sock, option, ctypes.byref(number), ctypes.sizeof(number))
    _check(f"srt_setsockflag({option})", int(result))


def set_bool(sock: int, option: int, value: bool) -> None:
    flag = ctypes.c_bool(value)
    result = _lib().srt_setsockflag(sock, option, ctypes.byref(flag), ctypes.sizeof(flag))
    _check(f"srt_setsockflag({option})", int(result))


def set_string(sock: int, option: int, value: str) -> None:
    raw = value.encode()
    buffer = ctypes.create_string_buffer(raw, len(raw))
    _check(
        f"srt_setsockflag({option})", int(_lib().srt_setsockflag(sock, option, buffer, len(raw)))
    )


def get_string(sock: int, option: int, max_bytes: int = 768) -> str:
    buffer = ctypes.create_string_buffer(max_bytes)
    length = ctypes.c_int(max_bytes)
    result = _lib().srt_getsockflag(sock, option, buffer, ctypes.byref(length))
    _check(f"srt_getsockflag({option})", int(result))
    return buffer.raw[: length.value].decode("utf-8", "replace")


def receive(sock: int, buffer: Any) -> int:
    """One message into `buffer` (a ctypes char array of >= 1456 bytes); its length.
    Raises `SrtError` (code SRT_EASYNCRCV on a receive timeout)."""
    return _check("srt_recvmsg", int(_lib().srt_recvmsg(sock, buffer, len(buffer))))


def bstats(sock: int) -> CBytePerfMon:
    """The socket's statistics since it connected (never cleared)."""
    stats = CBytePerfMon()
    _check("srt_bstats", int(_lib().srt_bstats(sock, ctypes.byref(stats), 0)))
    return stats


def socket_state(sock: int) -> int:
    return int(_lib().srt_getsockstate(sock))


def set_reject_reason(sock: int, reason: int) -> None:
    _lib().srt_setrejectreason(sock, reason)


def reject_reason(sock: int) -> int:
    return int(_lib().srt_getrejectreason(sock))


def reject_reason_text(reason: int) -> str:
    raw = _lib().srt_rejectreason_str(reason)
    return raw.decode("utf-8", "replace") if raw else str(reason)


class Epoll:
    """An SRT epoll set for readiness with a timeout (used for the listener)."""

    def __init__(self) -> None:
        self._id = _check("srt_epoll_create", int(_lib().srt_epoll_create()))

    def add(self, sock: int, events: int = SRT_EPOLL_IN | SRT_EPOLL_ERR) -> None:
        flags = ctypes.c_int(events)
        result = _lib().srt_epoll_add_usock(self._id, sock, ctypes.byref(flags))
        _check("srt_epoll_add_usock", int(result))

    def wait(self, timeout_ms: int) -> list[tuple[int, int]]:
        """(socket, events) ready within `timeout_ms`; [] on a timeout."""
        events = (_EpollEvent * 4)()
        count = int(_lib().srt_epoll_uwait(self._id, events, len(events), timeout_ms))
        if count < 0:
            raise _fail("srt_epoll_uwait")
        return [(events[i].fd, events[i].events) for i in range(min(count, len(events)))]

    def release(self) -> None:
        _lib().srt_epoll_release(self._id)


def receive_buffer(size: int = LIVE_MAX_PAYLOAD_BYTES) -> Any:
    """A buffer for `receive`."""
    return ctypes.create_string_buffer(max(size, LIVE_MAX_PAYLOAD_BYTES))
