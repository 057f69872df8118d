"""A type-preserving msgpack codec for values that cross a process boundary (infos, reset options,
``call`` arguments and results).

What goes in comes out with the same type, as if it had stayed in one process (what
``SyncVectorEnv`` gives): ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``,
lists, dicts (any hashable key this codec can carry: ``str``, ``int``, tuples, numpy scalars),
tuples, sets and frozensets, numpy arrays (dtype and shape, object arrays element by element),
numpy scalars (their dtype), numpy random generators (their state), enum members, classes and
functions named by import path, and plain objects of an importable class (its ``__dict__``,
rebuilt without calling ``__init__``).
Never pickle: a class travels by its import path (``module:qualname``) and only its data travels.

Anything else (a lambda, a local class, an open file, a generator, an object with ``__slots__``)
is a :class:`CodecError` (a ``TypeError``) naming where the value sits (``['event']``) and its
type — never a silent ``repr`` string.

The ext type codes below are part of the coordinator ↔ worker and daemon wires.
"""

from __future__ import annotations

import enum
import importlib
import threading
import types
from typing import Any

import msgpack
import numpy as np

from pool_env.errors import CodecError

__all__ = ["CodecError", "ext_hook", "pack", "render_path", "resolve_path", "unpack"]

EXT_NDARRAY = 1  # [dtype.str, shape] then the raw C-order bytes
EXT_SCALAR = 2  # [dtype.str, raw bytes]: a numpy scalar
EXT_TUPLE = 3  # the packed list of items
EXT_SET = 4  # [frozen, items]
EXT_OBJECT_ARRAY = 5  # [shape, flat items]: numpy arrays of dtype object
EXT_ENUM = 6  # [import path of the class, value]
EXT_OBJECT = 7  # [import path of the class, __dict__]
EXT_COMPLEX = 8  # [real, imag]
EXT_NAMED = 9  # import path of a class or function
EXT_GENERATOR = 10  # numpy.random.Generator: [bit generator name, state with big ints as decimal str]


class _Unencodable(Exception):
    def __init__(self, value: Any, why: str) -> None:
        super().__init__(why)
        self.value = value
        self.why = why


def render_path(path: tuple[Any, ...]) -> str:
    """``('a', 0)`` → ``"['a'][0]"``."""
    return "".join(f"[{key!r}]" for key in path)


def _import_path(obj: Any) -> str:
    """``module:qualname`` of a class or function that can be imported back, else raise."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise _Unencodable(obj, "it has no import path (a lambda or a local class/function)")
    if module == "__main__":
        raise _Unencodable(
            obj, "its class lives in __main__, which the other process cannot import; move it to a module"
        )
    return f"{module}:{qualname}"


def resolve_path(path: str) -> Any:
    """The object an import path ``module:qualname`` names (imports its module).

    Raises:
        ImportError, AttributeError: the module or a name in ``qualname`` does not exist.
    """
    module_name, _, qualname = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def _pack(value: Any) -> bytes:
    """Pack a part of a value (called from :func:`_default`, so never with the shared packer)."""
    data: bytes = msgpack.packb(value, default=_default, use_bin_type=True, strict_types=True)
    return data


_local = threading.local()


def _top_pack(value: Any) -> bytes:
    """Pack a whole value with this thread's reusable packer (making one per call costs ~1 µs)."""
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(default=_default, use_bin_type=True, strict_types=True)
    try:
        data: bytes = packer.pack(value)
    except BaseException:
        _local.packer = None  # a failed pack may leave the packer's buffer half full
        raise
    return data


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            return msgpack.ExtType(EXT_OBJECT_ARRAY, _pack([list(obj.shape), obj.ravel().tolist()]))
        header = msgpack.packb([obj.dtype.str, list(obj.shape)])
        return msgpack.ExtType(EXT_NDARRAY, header + np.ascontiguousarray(obj).tobytes())
    if isinstance(obj, np.generic):
        if obj.dtype.hasobject:
            raise _Unencodable(obj, "numpy object scalars are not supported")
        return msgpack.ExtType(EXT_SCALAR, msgpack.packb([obj.dtype.str, obj.tobytes()], use_bin_type=True))
    if isinstance(obj, enum.Enum):
        return msgpack.ExtType(EXT_ENUM, _pack([_import_path(type(obj)), obj.value]))
    if isinstance(obj, tuple):
        if hasattr(obj, "_fields"):  # a namedtuple: its class by import path, its fields as state
            return msgpack.ExtType(EXT_OBJECT, _pack([_import_path(type(obj)), {"__fields__": list(obj)}]))
        return msgpack.ExtType(EXT_TUPLE, _pack(list(obj)))
    if isinstance(obj, set | frozenset):
        return msgpack.ExtType(EXT_SET, _pack([isinstance(obj, frozenset), list(obj)]))
    if isinstance(obj, complex):
        return msgpack.ExtType(EXT_COMPLEX, _pack([obj.real, obj.imag]))
    if isinstance(obj, np.random.Generator):  # env.np_random: a copy with the same state
        state = obj.bit_generator.state
        return msgpack.ExtType(EXT_GENERATOR, _pack([state["bit_generator"], _ints_to_text(state)]))
    # Subclasses of the msgpack-native types (strict_types sends them here): their base value.
    for base in (bool, int, float, str, bytes):
        if isinstance(obj, base):
            return base(obj)  # type: ignore[arg-type]
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType):
        return msgpack.ExtType(EXT_NAMED, _pack(_import_path(obj)))
    if _is_plain_object(obj):
        return msgpack.ExtType(EXT_OBJECT, _pack([_import_path(type(obj)), vars(obj)]))
    raise _Unencodable(obj, "it is no plain data (not a Python class whose state is its __dict__)")


_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class defined in Python, not in C


def _is_plain_object(obj: Any) -> bool:
    """An instance of Python-defined classes only (besides ``object``) whose state is its ``__dict__``.

    Files, sockets, locks, exceptions and other C-backed objects hold state that a ``__dict__``
    does not capture; they are refused rather than rebuilt broken.
    """
    if not isinstance(getattr(obj, "__dict__", None), dict) or isinstance(obj, types.ModuleType):
        return False
    return all(cls.__flags__ & _HEAP_TYPE for cls in type(obj).__mro__[:-1])


def ext_hook(code: int, data: bytes, classes: bool = True) -> Any:
    """Rebuild one ext value (msgpack ``ext_hook``); classes are imported by their path (unless not ``classes``).

    Raises:
        CodecError: an unknown ext code, or a class that cannot be imported here.
    """
    if code == EXT_NDARRAY:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(data))
        unpacker.feed(data)
        dtype_str, shape = unpacker.unpack()
        dtype = np.dtype(dtype_str)
        if dtype.hasobject:
            raise CodecError("raw object arrays are not allowed on the wire")
        return np.frombuffer(data, dtype=dtype, offset=unpacker.tell()).reshape(shape).copy()
    if code == EXT_SCALAR:
        dtype_str, raw = msgpack.unpackb(data, raw=False)
        return np.frombuffer(raw, dtype=np.dtype(dtype_str))[0]
    if code == EXT_TUPLE:
        return tuple(_unpack(data, classes))
    if code == EXT_SET:
        frozen, items = _unpack(data, classes)
        return frozenset(items) if frozen else set(items)
    if code == EXT_OBJECT_ARRAY:
        shape, items = _unpack(data, classes)
        array = np.empty(len(items), dtype=object)
        array[:] = items if items else []
        return array.reshape(shape)
    if code == EXT_COMPLEX:
        real, imag = _unpack(data, classes)
        return complex(real, imag)
    if code == EXT_GENERATOR:
        name, state = _unpack(data, classes)
        if name not in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"):
            raise CodecError(f"unknown numpy bit generator {name!r}")
        bit_generator = getattr(np.random, name)()
        bit_generator.state = _text_to_ints(state)
        return np.random.Generator(bit_generator)
    if code in (EXT_ENUM, EXT_OBJECT, EXT_NAMED):
        if not classes:
            raise CodecError("values of a class (enum members, objects, classes, functions) are not accepted here")
        return _rebuild(code, _unpack(data, classes))
    raise CodecError(f"unknown msgpack ext type {code}")


def _ints_to_text(value: Any) -> Any:
    """A bit generator state with every int as ``"int:<decimal>"`` (128-bit ints do not fit msgpack)."""
    if isinstance(value, dict):
        return {key: _ints_to_text(item) for key, item in value.items()}
    if isinstance(value, int) and not isinstance(value, bool):
        return f"int:{value}"
    return value


def _text_to_ints(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _text_to_ints(item) for key, item in value.items()}
    if isinstance(value, str) and value.startswith("int:"):
        return int(value[4:])
    return value


def _plain_ext_hook(code: int, data: bytes) -> Any:
    return ext_hook(code, data, classes=False)


def _rebuild(code: int, payload: Any) -> Any:
    path = payload if code == EXT_NAMED else payload[0]
    try:
        target = resolve_path(path)
    except Exception as exc:
        raise CodecError(f"cannot import {path!r} to rebuild a value ({type(exc).__name__}: {exc})") from exc
    if code == EXT_NAMED:
        return target
    if not isinstance(target, type):
        raise CodecError(f"{path!r} is not a class")
    if code == EXT_ENUM:
        if not issubclass(target, enum.Enum):
            raise CodecError(f"{path!r} is not an enum")
        return target(payload[1])
    state = payload[1]
    if "__fields__" in state and issubclass(target, tuple):
        return target(*state["__fields__"])
    obj: Any = object.__new__(target)
    obj.__dict__.update(state)
    return obj


def _unpack(data: bytes, classes: bool) -> Any:
    hook = ext_hook if classes else _plain_ext_hook
    return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=hook, use_list=True)


def _locate(value: Any, path: tuple[Any, ...]) -> tuple[tuple[Any, ...], _Unencodable] | None:
    """Where in ``value`` the first value that cannot be encoded sits (only called on failure)."""
    children: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list | tuple | set | frozenset):
        children = list(enumerate(value))
    elif isinstance(value, np.ndarray) and value.dtype.hasobject:
        children = [(i, x) for i, x in enumerate(value.ravel().tolist())]
    elif not isinstance(value, enum.Enum | type) and _is_plain_object(value):
        try:
            _import_path(type(value))
        except _Unencodable as exc:
            return path, exc
        children = list(vars(value).items())
    for key, child in children:
        found = _locate(child, (*path, key))
        if found is not None:
            return found
    if not children:
        try:
            _pack(value)
        except _Unencodable as exc:
            return path, exc
        except (OverflowError, ValueError, TypeError) as exc:
            return path, _Unencodable(value, str(exc))
    return None


def pack(value: Any, what: str = "value") -> bytes:
    """msgpack bytes of ``value``, every type kept (see the module docstring).

    Raises:
        CodecError: a part of ``value`` cannot be encoded; the message names ``what``, the path
            of that part and its type.
    """
    try:
        return _top_pack(value)
    except (_Unencodable, OverflowError, ValueError, TypeError) as exc:
        found = _locate(value, ())
        path, cause = found if found is not None else ((), _Unencodable(value, str(exc)))
        bad = cause.value
        kind = f"{type(bad).__module__}.{type(bad).__qualname__}"
        raise CodecError(
            f"{what}{render_path(path)} is a {kind} ({_short_repr(bad)}), which cannot cross the process "
            f"boundary: {cause.why}. Send plain data (numbers, str, bytes, None, lists, tuples, dicts, "
            "numpy arrays and scalars, enums, or objects of an importable class with a __dict__)",
            path,
        ) from None


def unpack(data: bytes, max_bytes: int, *, classes: bool = True) -> Any:
    """The value ``data`` encodes (inverse of :func:`pack`).

    ``classes=False`` refuses values that name a class (nothing is imported): for input from a
    network peer, such as a daemon's clients.

    Raises:
        CodecError: an unknown ext type or a class that cannot be imported here.
        ValueError, msgpack errors: malformed bytes.
    """
    return msgpack.unpackb(
        data,
        raw=False,
        strict_map_key=False,
        ext_hook=ext_hook if classes else _plain_ext_hook,
        # The caller checked len(data) <= max_bytes; containers cannot then exceed it either.
        max_bin_len=max_bytes,
        max_ext_len=max_bytes,
    )


def _short_repr(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        text = object.__repr__(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
