"""Env kinds: one module each behind one protocol; the registry rebuilds them, pickle only where allowed."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from pool_env import errors
from pool_env.daemon.config import DaemonConfig
from pool_env.envs import KINDS, EnvFnsSpec, EnvSpec, GymEnvSpec, HttpEnvSpec, spec_from_wire
from pool_env.envs.degradation import ACTIONS, NUM_ACTIONS, OBS_FIELD_NAMES, OBS_FIELDS, Action
from pool_env.envs.gym import SLOTS_FOR_EVERY_CORE
from pool_env.envs.registry import resolve_spec
from pool_env.refserver.sim import DegradationEnv


def _cartpole() -> gym.Env[np.ndarray, int]:
    return gym.make("CartPole-v1")


SPECS: list[EnvSpec] = [
    HttpEnvSpec("http://host:1", "tok", step_size=5, observation="chunk"),
    GymEnvSpec("CartPole-v1", imports=["math"], max_episode_steps=50),
    EnvFnsSpec.from_callables([_cartpole, _cartpole]),
]


def test_every_kind_is_registered_under_its_wire_name_and_satisfies_the_protocol() -> None:
    assert sorted(KINDS) == ["env_fns", "gym", "http"]
    for spec in SPECS:
        assert KINDS[spec.kind] is type(spec)
        assert isinstance(spec, EnvSpec)


@pytest.mark.parametrize("spec", SPECS[:2], ids=["http", "gym"])
def test_specs_round_trip_through_the_wire(spec: EnvSpec) -> None:
    assert spec_from_wire(spec.to_wire()) == spec


def test_env_fns_reach_a_trusted_worker_with_the_factories_of_its_slots_only() -> None:
    spec = SPECS[2]
    assert isinstance(spec, EnvFnsSpec)
    rebuilt = spec_from_wire(spec.to_wire([1]), allow_pickle=True)
    assert isinstance(rebuilt, EnvFnsSpec) and rebuilt.slots == (1,)
    env = rebuilt.env_fns[0]()
    assert env.spec is not None and env.spec.id == "CartPole-v1"


def test_pickled_factories_are_refused_unless_the_caller_allows_pickle() -> None:
    with pytest.raises(errors.SpecError, match="pickled code"):
        spec_from_wire(SPECS[2].to_wire())


def test_a_daemon_takes_specs_not_pickled_callables() -> None:
    with pytest.raises(errors.SpecError, match="not pickled callables"):
        DaemonConfig(spec=SPECS[2], num_envs=2, num_workers=1)


def test_an_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(errors.SpecError, match=r"carrier-pigeon.*env_fns, gym, http"):
        spec_from_wire({"kind": "carrier-pigeon"})


def test_a_factory_that_cannot_be_pickled_is_refused_at_construction_naming_its_slot() -> None:
    import threading

    lock = threading.Lock()
    with pytest.raises(errors.SpecError, match=r"env_fns\[1\]"):
        EnvFnsSpec.from_callables([_cartpole, lambda: lock])
    with pytest.raises(errors.SpecError, match=r"env_fns\[0\]: expected a callable"):
        EnvFnsSpec.from_callables(["CartPole-v1"])  # type: ignore[list-item]


def test_local_kinds_share_the_default_worker_count_and_http_uses_more() -> None:
    http, local, fns = SPECS
    assert local.default_num_workers(64) == fns.default_num_workers(64) >= 1
    assert http.default_num_workers(64) >= local.default_num_workers(64)
    assert all(s.default_num_workers(1) == 1 for s in SPECS)


def test_local_kinds_keep_a_core_for_the_trainer_until_each_worker_has_many_slots_and_http_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    http, local, fns = SPECS
    for cores, spare_core, every_core in ((8, 7, 8), (2, 1, 2), (1, 1, 1)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        many = SLOTS_FOR_EVERY_CORE * cores
        assert local.default_num_workers(many - 1) == fns.default_num_workers(many - 1) == spare_core
        assert local.default_num_workers(many) == fns.default_num_workers(many) == every_core
        # The trainer steps slots of its own: it keeps its core at any slot count.
        assert local.default_num_workers(many, 32) == fns.default_num_workers(many, 32) == spare_core
        assert http.default_num_workers(64, 32) == http.default_num_workers(64) >= cores
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert local.default_num_workers(3, 1) == 3  # never more workers than slots


def test_the_degradation_env_facts_agree_with_the_http_spaces_and_the_reference_simulator() -> None:
    assert OBS_FIELDS == len(OBS_FIELD_NAMES) == 9
    assert [int(a) for a in ACTIONS] == [Action.FLY, Action.REPAIR, Action.SELL] == [0, 1, 2]
    obs_space, action_space, _, _ = HttpEnvSpec("http://x", "t").probe()
    assert obs_space.shape == (OBS_FIELDS,) and action_space == gym.spaces.Discrete(NUM_ACTIONS)
    sim = DegradationEnv(seed=0)
    assert len(sim.reset()) == OBS_FIELDS
    with pytest.raises(ValueError, match="action"):
        sim.step_chunk(NUM_ACTIONS, 10)


def test_the_vector_env_module_does_not_import_requests() -> None:
    code = "import sys, pool_env.vector_env; print('requests' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_the_constructor_takes_a_spec_or_env_fns_and_integer_counts_of_any_type() -> None:
    spec, num_envs = resolve_spec(SPECS[1], None, np.int64(3))
    assert spec is SPECS[1] and num_envs == 3 and type(num_envs) is int
    assert resolve_spec(SPECS[1], None, None)[1] == 16
    fns, num_envs = resolve_spec(None, [_cartpole] * 4, None)
    assert isinstance(fns, EnvFnsSpec) and num_envs == 4
    with pytest.raises(errors.SpecError, match="either a spec or env_fns"):
        resolve_spec(SPECS[1], [_cartpole], None)
    with pytest.raises(errors.SpecError, match="num_envs: must be an integer"):
        resolve_spec(SPECS[1], None, 2.0)  # type: ignore[arg-type]
    with pytest.raises(errors.SpecError, match="num_envs: must be an integer"):
        resolve_spec(SPECS[1], None, True)
    with pytest.raises(errors.SpecError, match="list of env factories"):
        resolve_spec("CartPole-v1", None, None)  # type: ignore[arg-type]
