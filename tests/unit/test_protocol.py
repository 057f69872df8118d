"""The coordinator <-> worker wire: round trips, arrays, limits, malformed input."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from pool_env import protocol
from pool_env.errors import ProtocolError


def test_message_round_trips_with_numpy_values() -> None:
    message = {"op": "done", "seq": 3, "infos": {2: {"x": np.float32(1.5), "arr": np.arange(6).reshape(2, 3)}}}
    decoded = protocol.decode(protocol.encode(message))
    assert decoded["seq"] == 3
    assert decoded["infos"][2]["x"] == 1.5
    np.testing.assert_array_equal(decoded["infos"][2]["arr"], np.arange(6).reshape(2, 3))
    assert decoded["infos"][2]["arr"].dtype == np.arange(6).dtype


def test_oversized_message_is_refused_on_both_sides() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        protocol.encode({"op": "x", "blob": b"\0" * (protocol.MAX_MESSAGE_BYTES + 1)})
    with pytest.raises(ProtocolError, match="exceeds"):
        protocol.decode(b"\0" * 101, max_bytes=100)


@pytest.mark.parametrize(
    "data",
    [b"\xc1", b"", msgpack.packb([1, 2]), msgpack.packb({"seq": 1}), msgpack.packb({"op": 5}), b"\x92\x01"],
)
def test_malformed_messages_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode(data)


def test_unknown_ext_type_is_refused() -> None:
    data = msgpack.packb({"op": "x", "v": msgpack.ExtType(42, b"abc")})
    with pytest.raises(ProtocolError, match="ext type"):
        protocol.decode(data)


def test_object_arrays_keep_their_elements_never_pickled() -> None:
    decoded = protocol.to_plain({"a": np.array([(1, 2), None, "x"], dtype=object)})
    assert decoded["a"].dtype == object
    assert decoded["a"].tolist() == [(1, 2), None, "x"]


def test_an_oversized_message_names_its_largest_parts_and_the_limit() -> None:
    message = {"op": "done", "infos": {3: {"depth": np.zeros(1000), "step": 1}}}
    expected = r"limit of 2000 bytes; largest parts: \['infos'\]\[3\]\['depth'\] 8000 bytes"
    with pytest.raises(ProtocolError, match=expected):
        protocol.encode(message, max_bytes=2000)


def test_the_autoreset_modes_are_gymnasiums_in_the_fast_paths_order() -> None:
    from gymnasium.vector import AutoresetMode

    assert tuple(mode.value for mode in AutoresetMode) == protocol.AUTORESET_MODES
