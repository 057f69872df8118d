"""The trainer ↔ daemon wire: request validation, spaces round trip (those without a fixed shape and
their seeded generators too), malformed space descriptions, array frames, config, errors."""

from __future__ import annotations

import pickle
from typing import Any

import msgpack
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.spaces.graph import GraphInstance

from pool_env import GymEnvSpec, errors
from pool_env.daemon import space_wire, wire
from pool_env.daemon.config import DaemonConfig, load_config_file, parse_spec
from pool_env.daemon.wire import RequestError, parse_request
from pool_env.shm import Leaf
from tests.envs.free_spaces import Parity


def nested_tuple(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "Discrete", "n": 2, "start": 0, "dtype": "<i8"}
    for _ in range(depth):
        data = {"type": "Tuple", "spaces": [data]}
    return data


def header(**fields: object) -> bytes:
    return msgpack.packb({"v": wire.PROTOCOL_VERSION, "id": 7, "op": "hello", **fields})


@pytest.mark.parametrize(
    ("frames", "message", "request_id"),
    [
        ([b"\xc1garbage"], "undecodable", None),
        ([msgpack.packb([1, 2])], "must be a map", None),
        ([msgpack.packb({"op": "hello", "v": 1})], "'id' must be an int", None),
        ([header(id=-1)], "'id' must be an int", None),
        ([header(op="launch")], "unknown op 'launch'", 7),
        ([header(), *[b""] * (wire.MAX_ARRAY_FRAMES + 1)], "array frames exceed", None),
        ([b"\x82" + b"\x00" * (wire.MAX_HEADER_BYTES + 1)], "exceeds the limit", None),
    ],
)
def test_malformed_requests_are_refused_with_a_clear_message(
    frames: list[bytes], message: str, request_id: object
) -> None:
    with pytest.raises(RequestError, match=message) as info:
        parse_request(frames)
    assert info.value.request_id == request_id


def test_another_protocol_version_is_refused_naming_both_versions() -> None:
    with pytest.raises(RequestError, match="client speaks version 999, this daemon speaks version 2") as info:
        parse_request([header(v=999)])
    reply = info.value.reply_error()
    assert isinstance(reply, errors.VersionMismatchError)
    assert (reply.client_version, reply.server_version) == (999, wire.PROTOCOL_VERSION)


def test_fields_are_type_checked_and_bool_is_not_an_int() -> None:
    with pytest.raises(errors.ProtocolError, match="'num_envs' must be int, got bool"):
        wire.field({"num_envs": True}, "num_envs", int)
    with pytest.raises(errors.ProtocolError, match="'lease' is missing"):
        wire.field({}, "lease", str)
    assert wire.field({}, "seeds", list, optional=True) is None


SPACES = [
    spaces.Box(-1.0, 2.0, (3, 2), np.float32),
    spaces.Box(np.array([-np.inf, 0]), np.array([np.inf, 5]), dtype=np.float64),
    spaces.Discrete(5, start=-2),
    spaces.MultiDiscrete([3, 4]),
    spaces.MultiBinary(4),
    spaces.Dict({"b": spaces.Discrete(2), "a": spaces.Tuple([spaces.Box(0, 1, (2,)), spaces.MultiBinary(2)])}),
    spaces.Text(6, min_length=2, charset="zyx01"),
    spaces.Sequence(spaces.Box(-1, 1, (2,), np.float32), stack=True),
    spaces.Sequence(spaces.Dict({"t": spaces.Text(3)})),
    spaces.Graph(spaces.Box(0, 1, (3,), np.float32), spaces.Discrete(4)),
    spaces.Graph(spaces.Discrete(3), None),
    spaces.OneOf([spaces.Text(4), spaces.Graph(spaces.Discrete(3), None), spaces.Discrete(5)]),
    spaces.Dict({7: spaces.Sequence(spaces.Discrete(3)), "none": spaces.Dict()}),
    Parity(1),
]


def crossed(space: spaces.Space[Any]) -> spaces.Space[Any]:
    """``space`` after the daemon's hello reply carried it to a client."""
    from pool_env.protocol import decode, encode

    return wire.space_from_wire(decode(encode({"op": "x", "space": wire.space_to_wire(space)}))["space"])


@pytest.mark.parametrize("space", SPACES, ids=lambda s: type(s).__name__)
def test_spaces_cross_the_wire_unchanged(space: spaces.Space[object]) -> None:
    assert crossed(space) == space


@pytest.mark.parametrize("space", SPACES, ids=lambda s: type(s).__name__)
def test_a_seeded_space_samples_the_same_values_after_crossing(space: spaces.Space[Any]) -> None:
    space.seed(5)
    copy = crossed(space)
    for _ in range(3):
        assert repr(copy.sample()) == repr(space.sample())


def test_text_keeps_the_order_of_its_characters() -> None:
    assert crossed(spaces.Text(4, charset="zyx"))._char_list == ("z", "y", "x")  # its sampling order


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "expected a map"),
        ({"type": "Hyperbox"}, "unknown space type 'Hyperbox'"),
        ({"type": "Text", "max_length": 4, "min_length": 1, "charset": 7}, "charset must be a str"),
        ({"type": "Text", "max_length": 4, "min_length": 9, "charset": "ab"}, "min_length must be less"),
        ({"type": "Sequence", "stack": False}, "KeyError"),
        ({"type": "Graph", "node_space": [], "edge_space": None}, "expected a map"),
        ({"type": "Discrete", "n": 2, "start": 0, "dtype": "<i8", "rng": "not a generator"}, "numpy Generator"),
        ({"type": "Custom", "class": "os:path", "state": msgpack.packb({}), "spaces": [], "dtype": None}, "Space"),
        ({"type": "Custom", "class": 3, "state": b"", "spaces": [], "dtype": None}, "class must be a str"),
        (nested_tuple(40), "nested deeper than 32"),
    ],
)
def test_a_malformed_space_description_is_one_protocol_error(data: Any, message: str) -> None:
    with pytest.raises(errors.ProtocolError, match=message):
        wire.space_from_wire(data)


def test_graph_actions_cross_as_plain_lists_and_come_back_as_graph_instances() -> None:
    space = spaces.Tuple([spaces.OneOf([spaces.Graph(spaces.Discrete(3), None)]), spaces.Sequence(spaces.Text(2))])
    space.seed(2)
    value = space.sample()
    plain = space_wire.to_plain(space, value)
    assert not isinstance(plain[0][1], GraphInstance) and isinstance(plain[0][1], list)
    back = space_wire.from_plain(space, plain)
    assert isinstance(back[0][1], GraphInstance) and repr(back) == repr(value)
    with pytest.raises(errors.ProtocolError, match="Graph value must be"):
        space_wire.from_plain(space, ((0, [1, 2]), ()))


def test_array_frames_are_checked_for_count_and_byte_size() -> None:
    leaves = [Leaf((), "<i8", ())]
    (array,) = wire.arrays_from_frames([np.arange(3, dtype=np.int64).tobytes()], leaves, 3, "actions")
    assert array.tolist() == [0, 1, 2]
    with pytest.raises(errors.ProtocolError, match="frame 0 has 8 bytes, expected 24"):
        wire.arrays_from_frames([b"\x00" * 8], leaves, 3, "actions")
    with pytest.raises(errors.ProtocolError, match="expected 1 array frame"):
        wire.arrays_from_frames([], leaves, 3, "actions")


def test_tcp_without_curve_keys_is_refused_at_construction() -> None:
    with pytest.raises(errors.SpecError, match=r"tcp:// needs CURVE"):
        DaemonConfig(GymEnvSpec("CartPole-v1"), bind="tcp://127.0.0.1:5555")
    with pytest.raises(errors.SpecError, match=r"workers: must be 1\.\.envs=2"):
        DaemonConfig(GymEnvSpec("CartPole-v1"), num_envs=2, num_workers=3)


def test_spec_strings_and_config_files(tmp_path: object) -> None:
    import pathlib

    assert parse_spec("gym:CartPole-v1") == GymEnvSpec("CartPole-v1")
    assert parse_spec("http://h:1", "tok").server_url == "http://h:1"  # type: ignore[union-attr]
    with pytest.raises(errors.SpecError, match="needs --token"):
        parse_spec("http://h:1")
    path = pathlib.Path(str(tmp_path)) / "pool.toml"
    path.write_text('spec = "gym:CartPole-v1"\nenvs = 8\nlease-timeout = 2.5\n')
    keys = {"spec", "envs", "lease_timeout"}
    assert load_config_file(str(path), keys) == {"spec": "gym:CartPole-v1", "envs": 8, "lease_timeout": 2.5}
    path.write_text("colour = 1\n")
    with pytest.raises(errors.SpecError, match=r"unknown keys \['colour'\].*valid keys: envs, lease_timeout, spec"):
        load_config_file(str(path), keys)


@pytest.mark.parametrize(
    "error",
    [
        errors.LeaseError("no"),
        errors.VersionMismatchError(1, 2, "ipc:///x"),
        errors.DaemonUnavailableError("gone"),
        RequestError("bad", 3, errors.VersionMismatchError(999, 1)),
    ],
)
def test_daemon_errors_survive_pickling(error: Exception) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
