"""The error tree crosses every wire through errors.to_wire / errors.from_wire (and pickle) intact."""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import Any

import msgpack
import pytest
from gymnasium.error import ClosedEnvironmentError, InvalidAction

from pool_env import errors
from pool_env.daemon.wire import RequestError
from pool_env.errors import ErrorKind, SlotFailure, StepFate
from workers.backends.http_client import NotFoundError, RetryableError

SAMPLES: dict[str, Any] = {
    "PoolEnvError": lambda: errors.PoolEnvError("x"),
    "UsageError": lambda: errors.UsageError("wrong order"),
    "ClosedError": lambda: errors.ClosedError("closed"),
    "AlreadyPendingError": lambda: errors.AlreadyPendingError("pending", "reset"),
    "NoPendingCallError": lambda: errors.NoPendingCallError("none", "reset"),
    "InvalidActionError": lambda: errors.InvalidActionError("bad"),
    "InvalidSeedError": lambda: errors.InvalidSeedError("3 seeds for 2 envs"),
    "SpecError": lambda: errors.SpecError("f: bad"),
    "LeaseError": lambda: errors.LeaseError("2 free"),
    "WorkerError": lambda: errors.WorkerError("w"),
    "WorkerStartError": lambda: errors.WorkerStartError("exit 1"),
    "ProtocolError": lambda: errors.ProtocolError("p"),
    "CodecError": lambda: errors.CodecError("infos['x'][0] is a function", ("x", 0)),
    "VersionMismatchError": lambda: errors.VersionMismatchError(1, 2, "ipc:///x"),
    "TransportError": lambda: errors.TransportError("t"),
    "HttpStatusError": lambda: errors.HttpStatusError(401, "invalid token", "http://x/api"),
    "QuotaExceededError": lambda: errors.QuotaExceededError("step limit of 5 reached", "http://x/api", 5, 5),
    "DaemonUnavailableError": lambda: errors.DaemonUnavailableError("gone"),
    "RetriesExhaustedError": lambda: errors.RetriesExhaustedError(3, "HTTP 503", ErrorKind.SERVER_5XX),
    "CallTimeoutError": lambda: errors.CallTimeoutError(5.0, 5.25, 2, "slow"),
    "EnvCreationError": lambda: errors.EnvCreationError("no such id"),
    "StepTimeoutError": lambda: errors.StepTimeoutError("late"),
    "SpaceMismatchError": lambda: errors.SpaceMismatchError("slot 1 declares Box(3,)"),
    "EnvError": lambda: errors.EnvError("slot 2: env", 2),
    "InvalidEnvReturnError": lambda: errors.InvalidEnvReturnError("slot 1: invalid reward", 1),
    "EnvRaisedError": lambda: errors.EnvRaisedError("slot 2: boom", 2),
    "EnvFailingError": lambda: errors.EnvFailingError("slot 0: raised 5 times", 0),
    "PoolGaveUpError": lambda: errors.PoolGaveUpError("every worker was given up on"),
    "SharedMemoryError": lambda: errors.SharedMemoryError("/dev/shm too small", 100, 10),
}

FIELDS = {  # the fields each class must keep besides its message
    "AlreadyPendingError": ("name",),
    "NoPendingCallError": ("name",),
    "VersionMismatchError": ("client_version", "server_version", "endpoint"),
    "HttpStatusError": ("status", "detail", "url"),
    "QuotaExceededError": ("status", "detail", "url", "steps_used", "limit"),
    "CodecError": ("path",),
    "RetriesExhaustedError": ("retries", "last_error", "kind"),
    "CallTimeoutError": ("call_timeout", "elapsed", "retries", "last_error", "kind"),
    "EnvError": ("slot",),
    "InvalidEnvReturnError": ("slot",),
    "EnvRaisedError": ("slot",),
    "EnvFailingError": ("slot",),
    "SharedMemoryError": ("needed", "free"),
}


def tree() -> list[str]:
    return [
        name
        for name in errors.__all__
        if isinstance(getattr(errors, name), type) and issubclass(getattr(errors, name), errors.PoolEnvError)
    ]


def over_msgpack(data: dict[str, Any]) -> Any:
    return msgpack.unpackb(msgpack.packb(data, use_bin_type=True), raw=False)


def same(copy: errors.PoolEnvError, error: errors.PoolEnvError) -> None:
    assert type(copy) is type(error) and str(copy) == str(error)
    for name in FIELDS.get(type(error).__name__, ()):
        assert getattr(copy, name) == getattr(error, name), name


def test_the_samples_cover_every_class_of_the_tree() -> None:
    assert sorted(SAMPLES) == sorted(tree())


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_class_keeps_its_class_and_fields_across_the_wire(name: str) -> None:
    error = SAMPLES[name]()
    same(errors.from_wire(over_msgpack(errors.to_wire(error))), error)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_class_survives_pickling(name: str) -> None:
    error = SAMPLES[name]()
    same(pickle.loads(pickle.dumps(error)), error)


def test_closed_and_invalid_action_errors_are_gymnasiums_too() -> None:
    assert issubclass(errors.ClosedError, ClosedEnvironmentError) and issubclass(errors.ClosedError, errors.UsageError)
    assert issubclass(errors.InvalidActionError, InvalidAction) and issubclass(errors.InvalidActionError, ValueError)


def test_a_remote_traceback_becomes_a_note() -> None:
    wire = errors.to_wire(errors.EnvCreationError("no such id"), traceback="Traceback ...\nKeyError: 'x'\n")
    error = errors.from_wire(over_msgpack(wire))
    assert type(error) is errors.EnvCreationError and str(error) == "no such id"
    assert error.__notes__ == ["remote traceback:\nTraceback ...\nKeyError: 'x'"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (NotFoundError("episode e1 not found", "http://x"), errors.TransportError),
        (RetryableError("HTTP 503"), errors.TransportError),
        (RequestError("bad header", 7), errors.ProtocolError),
    ],
)
def test_a_class_the_receiver_lacks_becomes_its_nearest_base(error: errors.PoolEnvError, expected: type) -> None:
    copy = errors.from_wire(over_msgpack(errors.to_wire(error)))
    assert type(copy) is expected and str(copy) == str(error)


def test_a_foreign_exception_travels_as_the_root_naming_its_type() -> None:
    copy = errors.from_wire(over_msgpack(errors.to_wire(KeyError("k"))))
    assert type(copy) is errors.PoolEnvError and str(copy) == "KeyError: 'k'"


def test_a_builtin_exception_sent_as_builtin_keeps_its_type_and_its_traceback_over_two_wires() -> None:
    error = AttributeError("'Env' object has no attribute 'x'")
    sent = errors.to_wire(error, "Traceback (most recent ...)", builtin=True)
    copy = errors.from_wire(over_msgpack(sent))
    assert type(copy) is AttributeError and str(copy) == "'Env' object has no attribute 'x'"
    assert copy.__notes__ == ["remote traceback:\nTraceback (most recent ...)"]
    again = errors.from_wire(over_msgpack(errors.to_wire(copy, builtin=True)))  # worker -> daemon -> trainer
    assert type(again) is AttributeError and again.__notes__ == copy.__notes__
    plain = errors.from_wire(over_msgpack(errors.to_wire(AttributeError("x"))))  # not asked: the root, as before
    assert type(plain) is errors.PoolEnvError and str(plain) == "AttributeError: x"


@pytest.mark.parametrize(
    "data",
    [
        {"class": "SystemExit", "builtin": True, "message": "0"},  # not an Exception: never raised for a peer
        {"class": "KeyboardInterrupt", "builtin": True, "message": ""},
        {"class": "open", "builtin": True, "message": "m"},
        {"class": "UnicodeDecodeError", "builtin": True, "message": "needs five arguments"},
    ],
)
def test_a_builtin_a_peer_names_is_an_exception_type_of_builtins_or_the_root(data: dict[str, Any]) -> None:
    error = errors.from_wire(data)
    assert type(error) is errors.PoolEnvError and data["message"] in str(error)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"class": "os.system", "bases": ["subprocess.Popen"], "message": "m", "fields": {}}, errors.PoolEnvError),
        ({"class": "ErrorKind", "bases": ["to_wire", "SlotFailure"], "message": "m"}, errors.PoolEnvError),
        (
            {"class": "HttpStatusError", "bases": ["TransportError"], "message": "m", "fields": {"status": 1}},
            errors.TransportError,
        ),
        ({"class": 3, "bases": "TransportError", "message": "m", "fields": []}, errors.PoolEnvError),
        ("not a map", errors.PoolEnvError),
    ],
)
def test_a_bad_or_hostile_description_gives_a_class_of_our_tree(data: Any, expected: type) -> None:
    assert type(errors.from_wire(data)) is expected


def test_slot_failures_round_trip_and_bad_ones_are_protocol_errors() -> None:
    failure = SlotFailure(ErrorKind.LOST_RESPONSE, StepFate.APPLIED, "step applied but its response was lost")
    assert SlotFailure.from_wire(over_msgpack({"f": failure.to_wire()})["f"]) == failure
    for bad in (["nope", "applied", "m"], ["worker_died", "maybe", "m"], ["worker_died"], None):
        with pytest.raises(errors.ProtocolError):
            SlotFailure.from_wire(bad)


def test_error_kinds_and_fates_compare_with_their_strings() -> None:
    assert ErrorKind.WORKER_DIED == "worker_died" and StepFate.UNKNOWN == "unknown"
    assert len({kind.value for kind in ErrorKind}) == len(ErrorKind)


def test_the_error_module_and_its_wire_load_no_gymnasium() -> None:
    code = """if True:
        import sys
        from pool_env import errors
        data = errors.to_wire(errors.HttpStatusError(401, "bad token"))
        assert type(errors.from_wire(data)) is errors.HttpStatusError
        errors.SlotFailure(errors.ErrorKind.WORKER_DIED, errors.StepFate.UNKNOWN, "x")
        print("gymnasium" in sys.modules)
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]


def test_the_module_docstring_draws_the_tree_as_it_is() -> None:
    assert errors.__doc__ is not None
    drawn = errors.__doc__.split("```")[1].strip().splitlines()
    assert drawn[0] == "PoolEnvError"
    parents: dict[str, str] = {}
    stack = ["PoolEnvError"]
    for line in drawn[1:]:
        marker = max(line.find("├── "), line.find("└── "))
        if marker < 0:
            continue  # a continued comment
        depth = marker // 4 + 1
        name = line[marker + 4 :].split()[0]
        del stack[depth:]
        parents[name] = stack[-1]
        stack.append(name)
    assert sorted(parents) == sorted(set(tree()) - {"PoolEnvError"})
    for name, parent in parents.items():
        cls = getattr(errors, name)
        nearest = next(
            c for c in cls.__mro__[1:] if issubclass(c, errors.PoolEnvError) and not c.__name__.startswith("_")
        )
        assert nearest.__name__ == parent, name
