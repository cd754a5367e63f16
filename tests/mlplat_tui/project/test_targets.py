"""``[targets.NAME]``: a valid table of each kind parses into its own model, and every refusal
names the file and the key (and never echoes a secret)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplat_runtime.errors import ConfigError
from mlplat_tui.project.config import CONFIG_NAME, Threshold, load_project, parse_config
from mlplat_tui.project.gate_specs import NoRegression
from mlplat_tui.project.targets import (
    CredentialRef,
    GitopsK8sTarget,
    LocalTarget,
    SwarmTarget,
    effective_gates,
)

HEAD = """
[project]
name = "churn"
[model]
name = "churn-classifier"
[gates]
"metrics.roc_auc" = ">= 0.85"
"latency.p95_ms" = "<= 5"
no_regression = { metric = "roc_auc", tolerance = 0.01 }
"""

STAGING = """
[targets.staging]
kind = "local"
stage = "staging"
port_base = 7900
gates = { "metrics.roc_auc" = ">= 0.87" }
"""

PROD = """
[targets.prod]
kind = "swarm"
stage = "prod"
requires = "staging"
registry = "http://127.0.0.1:5000"
image_registry = "127.0.0.1:5001"
docker_host = "unix:///var/run/docker.sock"
replicas = 2
publish = "edge"
port = 8802
resources = { cpus = 1.5, memory = "512m" }
gpu = 1
credentials = { env = "MLPLAT_PROD_TOKEN" }
"""

K8S = """
[targets.k8s]
kind = "gitops-k8s"
stage = "prod"
repo = "../gitops"
path = "models/churn"
kubernetes_version = "1.33"
image_registry = "127.0.0.1:5001"
credentials = { file = "~/.config/mlplat/k8s.token" }
"""

SWARM_MIN = """
[targets.prod]
kind = "swarm"
registry = "http://127.0.0.1:5000"
docker_host = "tcp://swarm-manager:2376"
"""


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    root = tmp_path / "proj"
    root.mkdir(exist_ok=True)
    (root / CONFIG_NAME).write_text(HEAD + text, encoding="utf-8")
    return load_project(root)


def refused(tmp_path: Path, text: str, key: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    err = info.value
    assert err.key == key, str(err)
    assert str(err).startswith(f"{tmp_path / 'proj' / CONFIG_NAME}: key '{key}': "), str(err)
    assert err.exit_code == 2
    return err


# --- valid files ---------------------------------------------------------------------------


def test_a_target_of_each_kind_parses_into_its_own_model(tmp_path: Path) -> None:
    targets = load(tmp_path, STAGING + PROD + K8S).config.targets
    staging, prod, k8s = targets["staging"], targets["prod"], targets["k8s"]
    assert list(targets) == ["staging", "prod", "k8s"]

    assert isinstance(staging, LocalTarget)
    assert (staging.stage, staging.port_base, staging.requires) == ("staging", 7900, None)
    assert staging.gates.thresholds == {"metrics.roc_auc": Threshold(op=">=", value=0.87)}

    assert isinstance(prod, SwarmTarget)
    assert (prod.stage, prod.requires, prod.replicas, prod.publish, prod.port) == (
        "prod", "staging", 2, "edge", 8802,
    )  # fmt: skip
    assert (prod.registry, prod.image_registry) == ("http://127.0.0.1:5000", "127.0.0.1:5001")
    assert prod.docker_host == "unix:///var/run/docker.sock"
    assert (prod.resources.cpus, prod.resources.memory, prod.gpu) == (1.5, "512m", 1)
    assert prod.credentials == CredentialRef(env="MLPLAT_PROD_TOKEN")

    assert isinstance(k8s, GitopsK8sTarget)
    assert (k8s.repo, k8s.path, k8s.kubernetes_version) == ("../gitops", "models/churn", "1.33")
    assert k8s.image_registry == "127.0.0.1:5001"
    assert k8s.credentials == CredentialRef(file="~/.config/mlplat/k8s.token")


def test_defaults_stage_is_the_target_name_and_swarm_needs_few_keys(tmp_path: Path) -> None:
    prod = load(tmp_path, SWARM_MIN).config.targets["prod"]
    assert isinstance(prod, SwarmTarget)
    assert (prod.stage, prod.replicas, prod.publish, prod.port, prod.gpu) == ("prod", 1, "ingress", None, 0)
    assert prod.credentials is None and prod.gates.specs == {}


def test_the_targets_are_frozen(tmp_path: Path) -> None:
    prod = load(tmp_path, SWARM_MIN).config.targets["prod"]
    with pytest.raises(ValueError):
        prod.replicas = 5  # type: ignore[misc]


def test_a_stage_gate_tighter_or_new_is_accepted_and_merges_over_the_project_gates(tmp_path: Path) -> None:
    text = """
[targets.staging]
kind = "local"
port_base = 7900
[targets.staging.gates]
"metrics.roc_auc" = "> 0.85"
"size_mb" = "<= 20"
no_regression = { metric = "roc_auc", tolerance = 0.0 }
"""
    cfg = load(tmp_path, text).config
    merged = effective_gates(cfg.gates, cfg.targets["staging"])
    assert merged.thresholds == {
        "metrics.roc_auc": Threshold(op=">", value=0.85),  # the stage's: strictly tighter
        "latency.p95_ms": Threshold(op="<=", value=5),  # the project's, inherited
        "size_mb": Threshold(op="<=", value=20),  # the stage's own
    }
    assert merged.no_regression == NoRegression(metric="roc_auc", tolerance=0.0)


def test_requires_may_chain_without_a_cycle(tmp_path: Path) -> None:
    text = STAGING + PROD + K8S.replace('stage = "prod"', 'stage = "prod"\nrequires = "prod"')
    targets = load(tmp_path, text).config.targets
    assert (targets["k8s"].requires, targets["prod"].requires) == ("prod", "staging")


def test_a_credentials_file_outside_the_project_by_absolute_path(tmp_path: Path) -> None:
    outside = tmp_path / "secrets" / "prod.token"
    cfg = load(tmp_path, SWARM_MIN + f'credentials = {{ file = "{outside}" }}\n').config
    assert cfg.targets["prod"].credentials == CredentialRef(file=str(outside))  # type: ignore[union-attr]


def test_a_relative_credentials_file_resolves_from_the_project_folder(tmp_path: Path) -> None:
    cfg = load(tmp_path, SWARM_MIN + 'credentials = { file = "../secrets/prod.token" }\n').config
    assert cfg.targets["prod"].credentials == CredentialRef(file="../secrets/prod.token")  # type: ignore[union-attr]


# --- refusals: unknown keys and wrong values -------------------------------------------------


def test_an_unknown_key_names_file_and_key_and_lists_the_kinds_keys(tmp_path: Path) -> None:
    err = refused(tmp_path, SWARM_MIN + "replicaz = 3\n", "targets.prod.replicaz")
    assert "no such key for a swarm target" in str(err) and "replicas" in str(err)


def test_a_key_of_another_kind_is_unknown_for_this_kind(tmp_path: Path) -> None:
    err = refused(tmp_path, STAGING + "replicas = 2\n", "targets.staging.replicas")
    assert "local target" in str(err) and "port_base" in str(err)
    refused(tmp_path, K8S + 'docker_host = "unix:///x"\n', "targets.k8s.docker_host")


def test_an_unknown_or_missing_kind(tmp_path: Path) -> None:
    err = refused(tmp_path, '[targets.prod]\nkind = "nomad"\n', "targets.prod.kind")
    assert "local, swarm, gitops-k8s" in str(err) and "'nomad'" in str(err)
    refused(tmp_path, '[targets.prod]\nstage = "prod"\n', "targets.prod.kind")
    refused(tmp_path, '[targets.prod]\nkind = ["swarm"]\n', "targets.prod.kind")


def test_a_missing_required_key_of_each_kind(tmp_path: Path) -> None:
    refused(tmp_path, '[targets.s]\nkind = "local"\n', "targets.s.port_base")
    refused(tmp_path, '[targets.p]\nkind = "swarm"\nregistry = "http://r:5000"\n', "targets.p.docker_host")
    refused(tmp_path, K8S.replace('kubernetes_version = "1.33"\n', ""), "targets.k8s.kubernetes_version")


@pytest.mark.parametrize(
    ("extra", "key", "says"),
    [
        ('publish = "mesh"\n', "targets.prod.publish", "'ingress' or 'edge'"),
        ("replicas = 0\n", "targets.prod.replicas", "greater than or equal to 1"),
        ('replicas = "two"\n', "targets.prod.replicas", "integer"),
        ("port = 70000\n", "targets.prod.port", "less than or equal to 65535"),
        ("gpu = -1\n", "targets.prod.gpu", "greater than or equal to 0"),
        ('resources = { memory = "lots" }\n', "targets.prod.resources.memory", '"512m"'),
        ("resources = { cpus = 0 }\n", "targets.prod.resources.cpus", "greater than 0"),
        ("resources = { disk = 1 }\n", "targets.prod.resources.disk", "Extra inputs"),
        ('image_registry = "http://127.0.0.1:5001"\n', "targets.prod.image_registry", "no scheme"),
        ('stage = "Prod!"\n', "targets.prod.stage", "lowercase stage name"),
    ],
)
def test_a_wrong_swarm_value_names_its_key(tmp_path: Path, extra: str, key: str, says: str) -> None:
    assert says in str(refused(tmp_path, SWARM_MIN + extra, key))


def test_wrong_urls_and_addresses(tmp_path: Path) -> None:
    bad_registry = SWARM_MIN.replace("http://127.0.0.1:5000", "mlflow.internal:5000")
    assert "http(s) URL" in str(refused(tmp_path, bad_registry, "targets.prod.registry"))
    bad_host = SWARM_MIN.replace("tcp://swarm-manager:2376", "swarm-manager:2376")
    assert "Docker address" in str(refused(tmp_path, bad_host, "targets.prod.docker_host"))
    for bad in ("../up", "/abs/path", ""):
        refused(tmp_path, K8S.replace('"models/churn"', f'"{bad}"'), "targets.k8s.path")
    assert "1.33" in str(
        refused(tmp_path, K8S.replace('"1.33"', '"v1.33.2"'), "targets.k8s.kubernetes_version")
    )


SECRET = "s3cr3t-never-printed"


@pytest.mark.parametrize(
    ("key", "old", "new"),
    [
        ("targets.prod.registry", "http://127.0.0.1:5000", f"https://alice:{SECRET}@mlflow.internal:5000"),
        ("targets.prod.registry", "http://127.0.0.1:5000", f"https://{SECRET}@mlflow.internal"),
        ("targets.prod.docker_host", "tcp://swarm-manager:2376", f"ssh://ops:{SECRET}@swarm-manager"),
        ("targets.prod.docker_host", "tcp://swarm-manager:2376", f"tcp://ops:{SECRET}@swarm-manager:2376"),
    ],
)
def test_credentials_inline_in_an_address_are_refused_unechoed(
    tmp_path: Path, key: str, old: str, new: str
) -> None:
    err = refused(tmp_path, SWARM_MIN.replace(old, new), key)
    assert "without credentials" in str(err) and err.hint and "environment variable" in err.hint
    assert SECRET not in str(err)


@pytest.mark.parametrize(
    "repo",
    [
        f"https://x-access-token:{SECRET}@github.com/org/gitops.git",
        f"https://{SECRET}@github.com/org/gitops.git",
        f"ssh://git:{SECRET}@github.com/org/gitops.git",
        f"git:{SECRET}@github.com:org/gitops.git",
    ],
)
def test_a_repo_url_with_a_token_is_refused_unechoed(tmp_path: Path, repo: str) -> None:
    err = refused(tmp_path, K8S.replace('"../gitops"', f'"{repo}"'), "targets.k8s.repo")
    assert SECRET not in str(err) and "without credentials" in str(err)


def test_an_ssh_login_name_alone_is_no_secret(tmp_path: Path) -> None:
    swarm = load(tmp_path, SWARM_MIN.replace("tcp://swarm-manager:2376", "ssh://ops@swarm-manager"))
    assert swarm.config.targets["prod"].docker_host == "ssh://ops@swarm-manager"
    for repo in ("git@github.com:org/gitops.git", "ssh://git@github.com/org/gitops.git"):
        k8s = load(tmp_path, K8S.replace('"../gitops"', f'"{repo}"'))
        assert k8s.config.targets["k8s"].repo == repo


def test_a_port_base_out_of_range(tmp_path: Path) -> None:
    refused(tmp_path, STAGING.replace("7900", "80"), "targets.staging.port_base")


def test_reserved_and_malformed_target_names(tmp_path: Path) -> None:
    err = refused(tmp_path, '[targets.local]\nkind = "local"\nport_base = 7900\n', "targets.local")
    assert "own stack" in str(err)
    refused(tmp_path, '[targets.Prod]\nkind = "local"\nport_base = 7900\n', "targets.Prod")
    with pytest.raises(ConfigError) as info:
        parse_config('targets = "prod"\n' + HEAD, "mlplat.toml")
    assert info.value.key == "targets"


# --- refusals: gates only tighten ------------------------------------------------------------


@pytest.mark.parametrize(
    ("gates", "key"),
    [
        ('{ "metrics.roc_auc" = ">= 0.80" }', "targets.staging.gates.metrics.roc_auc"),
        ('{ "metrics.roc_auc" = "<= 0.99" }', "targets.staging.gates.metrics.roc_auc"),  # other side
        ('{ "latency.p95_ms" = "<= 10" }', "targets.staging.gates.latency.p95_ms"),
        (
            '{ no_regression = { metric = "roc_auc", tolerance = 0.05 } }',
            "targets.staging.gates.no_regression",
        ),
        ('{ no_regression = { metric = "f1" } }', "targets.staging.gates.no_regression"),
    ],
)
def test_a_looser_stage_gate_is_refused_naming_its_key(tmp_path: Path, gates: str, key: str) -> None:
    text = f'[targets.staging]\nkind = "local"\nport_base = 7900\ngates = {gates}\n'
    err = refused(tmp_path, text, key)
    assert "may only tighten" in str(err)


def test_a_malformed_stage_gate_names_the_targets_key(tmp_path: Path) -> None:
    text = '[targets.staging]\nkind = "local"\nport_base = 7900\ngates = { "metrics.roc_auc" = "high" }\n'
    assert '">= 0.85"' in str(refused(tmp_path, text, "targets.staging.gates.metrics.roc_auc"))
    text = '[targets.staging]\nkind = "local"\nport_base = 7900\ngates = { "accuracy" = ">= 1" }\n'
    refused(tmp_path, text, "targets.staging.gates.accuracy")


def test_the_sub_table_spelling_of_stage_gates_is_checked_too(tmp_path: Path) -> None:
    text = (
        '[targets.staging]\nkind = "local"\nport_base = 7900\n[targets.staging.gates]\n"size_mb" = "<= 1"\n'
    )
    assert load(tmp_path, text).config.targets["staging"].gates.thresholds == {
        "size_mb": Threshold(op="<=", value=1)
    }
    loose = text.replace('"size_mb" = "<= 1"', '"latency.p95_ms" = "<= 6"')
    refused(tmp_path, loose, "targets.staging.gates.latency.p95_ms")


# --- refusals: requires ----------------------------------------------------------------------


def test_requires_must_name_another_existing_target(tmp_path: Path) -> None:
    err = refused(tmp_path, PROD, "targets.prod.requires")  # no staging defined
    assert "'staging'" in str(err)
    itself = STAGING + 'requires = "staging"\n'
    assert "not itself" in str(refused(tmp_path, itself, "targets.staging.requires"))


def test_a_cycle_of_requires_is_refused_and_drawn(tmp_path: Path) -> None:
    text = (
        '[targets.a]\nkind = "local"\nport_base = 7900\nrequires = "c"\n'
        '[targets.b]\nkind = "local"\nport_base = 7910\nrequires = "a"\n'
        '[targets.c]\nkind = "local"\nport_base = 7920\nrequires = "b"\n'
    )
    err = refused(tmp_path, text, "targets.a.requires")
    assert "a -> c -> b -> a" in str(err)


# --- refusals: local ports -------------------------------------------------------------------


def test_a_local_target_overlapping_the_project_stack_is_refused(tmp_path: Path) -> None:
    err = refused(tmp_path, STAGING.replace("7900", "7797"), "targets.staging.port_base")  # 7797-7800
    assert "[stack]" in str(err) and "7800 is taken" in str(err)
    moved = "[stack]\nport_base = 7900\n" + STAGING  # the project's stack moved onto 7900-7903
    refused(tmp_path, moved, "targets.staging.port_base")
    assert load(tmp_path, STAGING.replace("7900", "7804")).config.targets["staging"]  # just clear of it


def test_two_local_targets_on_overlapping_ports_are_refused(tmp_path: Path) -> None:
    other = '[targets.demo]\nkind = "local"\nport_base = 7902\n'
    err = refused(tmp_path, STAGING + other, "targets.demo.port_base")
    assert "targets.staging" in str(err)


# --- refusals: credentials by reference only -------------------------------------------------

SECRET = "hunter2-very-secret"


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        (f'token = "{SECRET}"\n', "targets.prod.token"),
        (f'password = "{SECRET}"\n', "targets.prod.password"),
        (f'credentials = "{SECRET}"\n', "targets.prod.credentials"),
        (f'credentials = {{ token = "{SECRET}" }}\n', "targets.prod.credentials.token"),
        (f'credentials = {{ env = "X", token = "{SECRET}" }}\n', "targets.prod.credentials.token"),
    ],
)
def test_an_inline_secret_is_refused_with_a_hint_and_never_echoed(
    tmp_path: Path, extra: str, key: str
) -> None:
    err = refused(tmp_path, SWARM_MIN + extra, key)
    assert SECRET not in str(err) and SECRET not in (err.hint or "")
    assert err.hint is not None and "environment variable" in err.hint and "outside the project" in err.hint


def test_a_credentials_reference_must_be_exactly_one_well_formed_reference(tmp_path: Path) -> None:
    both = 'credentials = { env = "A", file = "/etc/x" }\n'
    assert "exactly one" in str(refused(tmp_path, SWARM_MIN + both, "targets.prod.credentials"))
    refused(tmp_path, SWARM_MIN + "credentials = {}\n", "targets.prod.credentials")
    refused(tmp_path, SWARM_MIN + 'credentials = { env = "NOT A NAME" }\n', "targets.prod.credentials.env")
    refused(tmp_path, SWARM_MIN + 'credentials = { file = "" }\n', "targets.prod.credentials.file")


@pytest.mark.parametrize(
    "inside", ["prod.token", "secrets/prod.token", "./x/../prod.token", "{root}/prod.token"]
)
def test_a_credentials_file_inside_the_project_is_refused(tmp_path: Path, inside: str) -> None:
    path = inside.format(root=tmp_path / "proj")
    err = refused(tmp_path, K8S.replace("~/.config/mlplat/k8s.token", path), "targets.k8s.credentials.file")
    assert "outside the project folder" in str(err)


def test_a_credentials_file_reached_through_a_symlink_into_the_project_is_refused(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    link = tmp_path / "elsewhere"
    link.symlink_to(tmp_path / "proj", target_is_directory=True)
    text = K8S.replace("~/.config/mlplat/k8s.token", str(link / "k8s.token"))
    refused(tmp_path, text, "targets.k8s.credentials.file")


def test_parse_config_without_a_folder_names_the_given_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(HEAD + SWARM_MIN + "replicaz = 1\n", "team/mlplat.toml")
    assert str(info.value).startswith("team/mlplat.toml: key 'targets.prod.replicaz'")
