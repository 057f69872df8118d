"""The type-preserving codec: what crosses a process boundary comes back with the same type and
value (as in one process, what SyncVectorEnv gives); what cannot is a TypeError naming it."""

from __future__ import annotations

import collections
import enum
import pickle
from typing import Any

import numpy as np
import pytest

from pool_env import codec
from pool_env.codec import CodecError


class Color(enum.Enum):
    RED = "red"


class Event:
    """A plain object some envs put in infos."""

    def __init__(self, name: str, where: tuple[int, int]) -> None:
        self.name = name
        self.where = where

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and vars(other) == vars(self)


Point = collections.namedtuple("Point", "x y")


def round_trip(value: Any) -> Any:
    return codec.unpack(codec.pack(value), 1 << 30)


@pytest.mark.parametrize(
    "value",
    [
        None, True, 3, -2.5, "text", b"raw", 1 + 2j,
        (1, (2, "a")), [1, (2,)], {1, 2}, frozenset({"a"}),
        np.float32(1.25), np.int32(-3), np.bool_(True), np.uint64(2**63 + 1), np.float16(0.5),
        Color.RED, Event("hit", (1, 2)), Point(1, 2.5), Event,
    ],
    ids=repr,
)
def test_scalars_containers_and_objects_keep_type_and_value(value: Any) -> None:
    back = round_trip(value)
    assert type(back) is type(value)
    assert back == value


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.int16).reshape(2, 3),
        np.zeros((0, 4), np.float32),
        np.array([[True, False]]),
        np.arange(4, dtype=">f8"),
        np.array([(1, 2), None, "x"], dtype=object),
    ],
    ids=lambda a: f"{a.dtype}{a.shape}",
)
def test_arrays_keep_dtype_shape_and_values(array: np.ndarray) -> None:
    back = round_trip(array)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tolist() == array.tolist()


def test_nested_dicts_keep_int_and_tuple_keys_and_empty_dicts() -> None:
    value = {0: {"x": np.float32(1.5)}, (1, 2): "pair", "empty": {}}
    back = round_trip(value)
    assert back == value
    assert type(back[0]["x"]) is np.float32


@pytest.mark.parametrize(
    ("value", "path", "kind"),
    [
        ({"event": lambda: 0}, "['event']", "function"),
        ({"a": {"b": [1, open]}}, None, None),  # a builtin function travels by import path
        ({"log": {"file": ValueError("x")}}, "['log']['file']", "ValueError"),
        ({"big": 2**80}, "['big']", "int"),
    ],
)
def test_what_cannot_cross_is_a_type_error_naming_key_and_type(value: Any, path: str | None, kind: str | None) -> None:
    if path is None:
        assert round_trip(value)["a"]["b"][1] is open
        return
    with pytest.raises(TypeError) as caught:
        codec.pack(value, "infos")
    assert isinstance(caught.value, CodecError)
    assert f"infos{path} is a " in str(caught.value)
    assert kind in str(caught.value)
    assert "repr" not in str(caught.value)


def test_a_class_from_main_is_refused_naming_the_fix() -> None:
    local = type("Local", (), {"__module__": "__main__", "__qualname__": "Local"})
    with pytest.raises(CodecError, match=r"\['x'\].*__main__.*move it to a module"):
        codec.pack({"x": local()}, "options")


def test_class_values_can_be_refused_for_network_peers() -> None:
    data = codec.pack({"a": (Event("x", (0, 0)),)})
    with pytest.raises(CodecError, match="not accepted here"):
        codec.unpack(data, 1 << 20, classes=False)
    assert codec.unpack(codec.pack({"a": (1, np.int8(2))}), 1 << 20, classes=False) == {"a": (1, np.int8(2))}


def test_codec_error_survives_pickling() -> None:
    error = CodecError("infos['x'] is a function", ("x",))
    back = pickle.loads(pickle.dumps(error))
    assert str(back) == str(error) and back.path == ("x",)
