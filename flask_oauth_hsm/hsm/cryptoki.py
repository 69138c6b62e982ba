"""ctypes access to the parts of a PKCS#11 module's function list python-pkcs11 does not expose.

python-pkcs11 calls ``C_Initialize(NULL)``, which tells the module the application is single
threaded; SoftHSM then uses no mutexes and two threads on two sessions crash the process. We
finalise and initialise again with ``CKF_OS_LOCKING_OK`` (PKCS#11 v2.40 §5.4) through the module's
own function list. ``C_Login`` is also called here, on a session we own, so a wrong PIN cannot
leak a handle and its return code can be told apart (incorrect vs locked).

The function list must be *python-pkcs11's own*, not one from a second ``C_GetFunctionList``:
proxy modules such as ``p11-kit-client.so`` return a new module instance, with its own connection
and sessions, from every call (PKCS#11 v2.40 §5.2 allows it), and a login through another instance
logs nothing in. python-pkcs11 does not expose its pointer; :func:`function_list_address` reads it
from the object (checked against the layout of the pinned version, see pyproject.toml).
"""

from __future__ import annotations

import ctypes

from .. import errors

# PKCS#11 constants (pkcs11t.h).
CKF_OS_LOCKING_OK = 0x00000002
CKU_USER = 1
CKR_OK = 0x000
CKR_PIN_INCORRECT = 0x0A0
CKR_PIN_LOCKED = 0x0A4
CKR_USER_ALREADY_LOGGED_IN = 0x100
CKR_CRYPTOKI_NOT_INITIALIZED = 0x190
CKS_RO_USER_FUNCTIONS = 1
CKS_RW_USER_FUNCTIONS = 3


class _InitArgs(ctypes.Structure):
    _fields_ = [
        ("CreateMutex", ctypes.c_void_p),
        ("DestroyMutex", ctypes.c_void_p),
        ("LockMutex", ctypes.c_void_p),
        ("UnlockMutex", ctypes.c_void_p),
        ("flags", ctypes.c_ulong),
        ("pReserved", ctypes.c_void_p),
    ]


class _SessionInfo(ctypes.Structure):
    _fields_ = [
        ("slotID", ctypes.c_ulong),
        ("state", ctypes.c_ulong),
        ("flags", ctypes.c_ulong),
        ("ulDeviceError", ctypes.c_ulong),
    ]


_FN = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_void_p)
_FN_LOGIN = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong)
_FN_SINFO = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_ulong, ctypes.POINTER(_SessionInfo))
# Order of CK_FUNCTION_LIST (PKCS#11 v2.40 §5.2, pkcs11f.h) up to C_Login.
_FN_NAMES = [
    "C_Initialize",
    "C_Finalize",
    "C_GetInfo",
    "C_GetFunctionList",
    "C_GetSlotList",
    "C_GetSlotInfo",
    "C_GetTokenInfo",
    "C_GetMechanismList",
    "C_GetMechanismInfo",
    "C_InitToken",
    "C_InitPIN",
    "C_SetPIN",
    "C_OpenSession",
    "C_CloseSession",
    "C_CloseAllSessions",
    "C_GetSessionInfo",
    "C_GetOperationState",
    "C_SetOperationState",
    "C_Login",
]


class _FunctionList(ctypes.Structure):
    _fields_ = [("version", ctypes.c_ubyte * 2)] + [(name, ctypes.c_void_p) for name in _FN_NAMES]


def function_list_address(lib: object) -> int:
    """The ``CK_FUNCTION_LIST *`` a ``pkcs11.lib`` calls through.

    python-pkcs11 0.10.1 declares ``cdef class HasFuncList`` (the base of ``pkcs11.lib``) with the
    fields ``CK_FUNCTION_LIST *funclist``, ``funclist30``, ``funclist32`` right after the object
    header: the first pointer sits at ``id(lib) + object.__basicsize__`` (CPython). A release
    that changes that layout is refused here, never misread; an upgrade of the pin re-checks it.
    """
    import pkcs11._pkcs11 as native

    has_funclist: type = native.HasFuncList  # type: ignore[attr-defined]  # not in python-pkcs11's stubs
    pointer = ctypes.sizeof(ctypes.c_void_p)
    if has_funclist.__basicsize__ != object.__basicsize__ + 3 * pointer or not isinstance(lib, has_funclist):
        raise errors.HSMConfigError("python-pkcs11: unexpected object layout (flask-oauth-hsm supports 0.10.1 only)")
    address = ctypes.c_void_p.from_address(id(lib) + object.__basicsize__).value
    if not address:
        raise errors.HSMConfigError("OAUTH_HSM_PKCS11_MODULE: the module returned no function list")
    return int(address)


class Cryptoki:
    """The calls python-pkcs11 does not offer, on the function list of ``lib`` (a ``pkcs11.lib``)."""

    def __init__(self, lib: object):
        fl = ctypes.cast(function_list_address(lib), ctypes.POINTER(_FunctionList)).contents
        if fl.version[0] not in (2, 3) or not all(
            getattr(fl, n) for n in ("C_Initialize", "C_Finalize", "C_Login", "C_GetSessionInfo")
        ):
            raise errors.HSMConfigError("OAUTH_HSM_PKCS11_MODULE: the module's function list is incomplete")
        self._lib, self._fl = lib, fl  # the lib keeps the module (and so the list) loaded
        self._initialize = _FN(self._fl.C_Initialize)
        self._finalize = _FN(self._fl.C_Finalize)
        self._login = _FN_LOGIN(self._fl.C_Login)
        self._session_info = _FN_SINFO(self._fl.C_GetSessionInfo)

    def reinitialize(self, os_locking: bool) -> None:
        """Finalize whatever state exists and initialise again (with CKF_OS_LOCKING_OK)."""
        if self._finalize(None) not in (CKR_OK, CKR_CRYPTOKI_NOT_INITIALIZED):
            raise errors.HSMUnavailable("HSM unavailable: C_Finalize failed")
        args = _InitArgs(flags=CKF_OS_LOCKING_OK)
        if self._initialize(ctypes.addressof(args) if os_locking else None) != CKR_OK:
            raise errors.HSMUnavailable("HSM unavailable: C_Initialize failed")

    def login(self, session_handle: int, pin: str) -> int:
        data = pin.encode("utf-8")
        return int(self._login(session_handle, CKU_USER, data, len(data)))

    def logged_in(self, session_handle: int) -> bool:
        info = _SessionInfo()
        if self._session_info(session_handle, ctypes.byref(info)) != CKR_OK:
            return False
        return info.state in (CKS_RO_USER_FUNCTIONS, CKS_RW_USER_FUNCTIONS)
