"""Experiment config: YAML loading and one clear error per mistake."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cluster.config import ExperimentConfig, dump_config, load_config
from core.configlib import ConfigError, from_dict, require

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


def test_defaults_and_yaml(tmp_path):
    cfg = load_config(write(tmp_path, "name: x\nseed: 3\nenv:\n  image_size: 64\n"))
    assert (cfg.name, cfg.seed, cfg.env.image_size, cfg.env.name) == ("x", 3, 64, "tabletop")
    assert load_config(None) == ExperimentConfig()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    load_config(path)


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, "env:\n  imgae_size: 64\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "'env.imgae_size'" in msg and str(p) in msg and "did you mean 'image_size'" in msg


def test_wrong_type(tmp_path):
    with pytest.raises(ConfigError, match=r"'env.image_size'.*expected an integer, got 'big'"):
        load_config(write(tmp_path, "env:\n  image_size: big\n"))
    with pytest.raises(ConfigError, match=r"'env.name'.*one of 'tabletop', 'libero'"):
        load_config(write(tmp_path, "env:\n  name: mujoco\n"))
    with pytest.raises(ConfigError, match=r"'seed'.*expected an integer, got True"):
        load_config(write(tmp_path, "seed: true\n"))


def test_impossible_value(tmp_path):
    p = write(tmp_path, "env:\n  image_size: 4\n")
    with pytest.raises(ConfigError, match=r"'env'.*image_size must be >= 16"):
        load_config(p)
    p = write(tmp_path, "env:\n  layout: homes\n  layout_jitter: 0.2\n")
    with pytest.raises(ConfigError, match=r"layout_jitter must be in \[0, 0.04\]"):
        load_config(p)
    p = write(tmp_path, "post_train:\n  world: dream\n")
    with pytest.raises(
        ConfigError, match=r"post_train.world must be one of \['imagined', 'real'\], got 'dream'"
    ):
        load_config(p)
    p = write(tmp_path, "post_train:\n  world: real\n  real_reward: dense\n")
    with pytest.raises(ConfigError, match=r"post_train.real_reward must be one of"):
        load_config(p)
    p = write(tmp_path, "post_train:\n  real_reward: progress\n")
    with pytest.raises(ConfigError, match=r"real_reward is the reward of post_train.world: real"):
        load_config(p)
    assert load_config(p, ["post_train.world=real"]).post_train.real_reward == "progress"
    p = write(tmp_path, "post_train:\n  imagined_reward: progress\n")
    with pytest.raises(
        ConfigError,
        match=r"imagined_reward must be one of \['reflector', 'success'\], got 'progress'",
    ):
        load_config(p)
    p = write(tmp_path, "cluster:\n  placement: shared\n")
    with pytest.raises(
        ConfigError, match=r"cluster.placement must be one of services, colocated, got 'shared'"
    ):
        load_config(p)
    p = write(tmp_path, "cluster:\n  learners: 0\n")
    with pytest.raises(ConfigError, match=r"'cluster'.*learners must be >= 1"):
        load_config(p)
    p = write(tmp_path, "rollout:\n  mirrored: true\n  group_size: 6\n")
    with pytest.raises(ConfigError, match=r"rollout.mirrored and learner.advantage: rloo_mirrored"):
        load_config(p)
    p = write(tmp_path, "rollout:\n  mirrored: true\n  group_size: 5\n")
    with pytest.raises(ConfigError, match=r"rollout.group_size must be even and >= 4, got 5"):
        load_config(p, ["learner.advantage=rloo_mirrored"])
    assert load_config(p, ["rollout.group_size=6", "learner.advantage=rloo_mirrored"])
    p = write(tmp_path, "cluster:\n  simulator:\n    trace: true\n    bf16: true\n")
    with pytest.raises(ConfigError, match=r"'cluster.simulator'.*trace.*not with bf16 or compile"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"cluster.reflector.trace is not supported"):
        load_config(None, ["cluster.reflector.trace=true"])


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "env: [\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_overrides_and_dump(tmp_path):
    cfg = load_config(None, ["env.image_size=64", "seed=5", "learner.lr_lora=5e-5"])
    assert (cfg.env.image_size, cfg.seed, cfg.learner.lr_lora) == (64, 5, 5e-5)
    with pytest.raises(ConfigError, match="'learner.lr_lora'.*expected a number"):
        load_config(None, ["learner.lr_lora=fast"])
    with pytest.raises(ConfigError, match="'env.size'"):
        load_config(None, ["env.size=64"])
    dump_config(cfg, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == cfg


@dataclass
class _Inner:
    xs: list[float] = field(default_factory=list)
    pair: tuple[int, int] = (1, 2)
    opt: str | None = None

    def __post_init__(self):
        require(len(self.xs) <= 3, "xs holds at most 3 numbers")


def test_nested_types():
    got = from_dict(_Inner, {"xs": [1, 2.5], "pair": [3, 4], "opt": None})
    assert got == _Inner([1.0, 2.5], (3, 4), None)
    with pytest.raises(ConfigError, match=r"'xs\[1\]'.*expected a number"):
        from_dict(_Inner, {"xs": [1, "a"]})
    with pytest.raises(ConfigError, match="expected 2 items"):
        from_dict(_Inner, {"pair": [1]})
    with pytest.raises(ConfigError, match="at most 3"):
        from_dict(_Inner, {"xs": [1, 2, 3, 4]})


def test_non_finite_numbers_are_refused_with_the_key() -> None:
    from cluster.config import load_config
    from core.configlib import ConfigError

    for value in ("inf", ".inf", "nan", "-.inf"):
        with pytest.raises(ConfigError, match="learner.lr_lora.*finite"):
            load_config(None, [f"learner.lr_lora={value}"])


def test_post_train_world_real_turns_off_the_configs_coevolution() -> None:
    """The demo config schedules co-evolution for imagination; ``post-train --world real`` on it
    runs without it, and an explicit ``--set post_train.coevolve_every`` still gets its error."""
    from cluster.cli import build_parser
    from cluster.commands.post_train import overrides

    def config_of(*argv: str) -> ExperimentConfig:
        args = build_parser("post-train").parse_args(["post-train", *argv])
        return load_config(args.config, overrides(args))

    demo = str(CONFIGS / "demo.yaml")
    assert config_of("--config", demo, "--iterations", "20").post_train.coevolve_every == 10
    cfg = config_of("--config", demo, "--world", "real", "--iterations", "20")
    assert (cfg.post_train.world, cfg.post_train.coevolve_every) == ("real", 0)
    with pytest.raises(ConfigError, match="coevolve_every refines the world model"):
        config_of("--config", demo, "--world", "real", "--set", "post_train.coevolve_every=2")
