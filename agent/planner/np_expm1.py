"""Numpy's own float64 ``expm1`` loop, found in the ufunc object so that C code can call it by
its address (numpy's ``expm1`` is not the C library's: they differ in the last bit on about 3 %
of the read-out's arguments on this machine; :func:`agent.planner.walk_c.load` checks the loop
against ``np.expm1`` before anything uses it)."""

from __future__ import annotations

import ctypes

import numpy as np

_P = ctypes.c_void_p


class _UFunc(ctypes.Structure):
    """The head of numpy's ``PyUFuncObject`` (numpy/ufuncobject.h, public and stable)."""

    _fields_ = [
        ("ob_refcnt", ctypes.c_ssize_t),
        ("ob_type", _P),
        ("nin", ctypes.c_int),
        ("nout", ctypes.c_int),
        ("nargs", ctypes.c_int),
        ("identity", ctypes.c_int),
        ("functions", ctypes.POINTER(_P)),
        ("data", ctypes.POINTER(_P)),
        ("ntypes", ctypes.c_int),
        ("reserved1", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("types", ctypes.POINTER(ctypes.c_char)),
    ]


def numpy_expm1_loop() -> tuple[int, int] | None:
    """The address of numpy's float64 ``expm1`` loop and its data, or None when the ufunc does
    not look as expected (then the C walk is not used)."""
    uf = _UFunc.from_address(id(np.expm1))
    if uf.name != b"expm1" or (uf.nin, uf.nout, uf.nargs) != (1, 1, 2) or not uf.functions:
        return None
    double = np.dtype(np.float64).num
    for i in range(uf.ntypes):
        if ord(uf.types[2 * i]) == double and ord(uf.types[2 * i + 1]) == double:
            fn, data = uf.functions[i], uf.data[i] if uf.data else None
            return (int(fn), int(data or 0)) if fn else None
    return None
