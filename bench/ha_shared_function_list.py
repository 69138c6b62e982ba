"""Measurement only: hsm change 1 of /work/notes/ha.md applied by patching flask_oauth_hsm.hsm.

p11-kit-client.so returns a new module instance from every C_GetFunctionList call, so the ctypes
shim in flask_oauth_hsm.hsm (C_Initialize with CKF_OS_LOCKING_OK, C_Login, C_GetSessionInfo) must
use the function list python-pkcs11 itself holds. This module does that for the benchmarks; the
package is to do it itself. ``ha_patched_app:app`` is example_app with the patch, for gunicorn.
"""

from __future__ import annotations

import ctypes
import os


def share_function_list() -> None:
    """The proposed package change, applied here for measurement only."""
    import pkcs11
    import pkcs11._pkcs11 as _p

    from flask_oauth_hsm import hsm as H

    # python-pkcs11 0.10.1: HasFuncList is PyObject_HEAD + funclist, funclist30, funclist32.
    assert _p.HasFuncList.__basicsize__ == object.__basicsize__ + 3 * ctypes.sizeof(ctypes.c_void_p)

    def cryptoki_init(self, lib):
        address = ctypes.c_void_p.from_address(id(lib) + object.__basicsize__).value
        self._dll, self._fl, self._lib = None, ctypes.cast(address, ctypes.POINTER(H._FunctionList)).contents, lib
        self._initialize = H._FN(self._fl.C_Initialize)
        self._finalize = H._FN(self._fl.C_Finalize)
        self._login = H._FN_LOGIN(self._fl.C_Login)
        self._session_info = H._FN_SINFO(self._fl.C_GetSessionInfo)

    def module_initialize(self):
        try:
            self.lib = pkcs11.lib(self.path)
        except pkcs11.PKCS11Error:
            raise H.errors.HSMUnavailable("HSM unavailable: C_Initialize failed") from None
        self.cryptoki = H._Cryptoki(self.lib)
        self.cryptoki.reinitialize(self.os_locking)
        self.generation += 1
        self.pid = os.getpid()

    H._Cryptoki.__init__ = cryptoki_init
    H._Module._initialize = module_initialize
