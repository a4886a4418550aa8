"""The sites YAML: every mistake is one message naming the file, the site and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from colmena_fed import ConfigError, SitesConfig

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sites.yaml"
    path.write_text(text)
    return path


def test_example_sites_yaml_loads_with_paths_resolved() -> None:
    config = SitesConfig.from_yaml(REPO / "examples" / "sites.yaml")
    assert set(config.sites) == {"cpu-site", "gpu-site"}
    assert config.sites["cpu-site"].resources == {"cpu": 2}
    assert config.sites["gpu-site"].resources == {"gpu": 1}
    assert config.sites["cpu-site"].local == REPO / "endpoints" / "local-cpu.yaml"
    assert config.sites["cpu-site"].backend == "local"
    assert config.scheduler.policy == "availability"


def test_globus_site_is_read_with_its_endpoint_uuid(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
sites:
  polaris:
    endpoint: 5c9d8e1a-1111-2222-3333-444455556666
    resources: {gpu: 16}
    user_endpoint_config: {account: MyProj, queue: debug}
""",
    )
    site = SitesConfig.from_yaml(path).sites["polaris"]
    assert site.backend == "globus"
    assert str(site.endpoint) == "5c9d8e1a-1111-2222-3333-444455556666"
    assert site.user_endpoint_config == {"account": "MyProj", "queue": "debug"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sites: [\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping with a 'sites:' section"),
        ("sites: {}\n", "no sites"),
        (
            "sites:\n  laptop:\n    local: x.yaml\n",
            "site 'laptop', field 'resources': Field required",
        ),
        (
            "sites:\n  laptop:\n    resources: {cpu: 1}\n",
            "site 'laptop': give exactly one of",
        ),
        (
            "sites:\n  laptop:\n    local: x.yaml\n"
            "    endpoint: 5c9d8e1a-1111-2222-3333-444455556666\n    resources: {cpu: 1}\n",
            "give exactly one of",
        ),
        (
            "sites:\n  laptop:\n    local: x.yaml\n    resources: {cpu: 0}\n",
            "site 'laptop', field 'resources.cpu': Input should be greater than 0",
        ),
        (
            "sites:\n  laptop:\n    local: x.yaml\n    resources: {}\n",
            "must offer at least one slot kind",
        ),
        (
            "sites:\n  laptop:\n    local: x.yaml\n    resources: {cpu: 1}\n    workers: 3\n",
            "site 'laptop', field 'workers': unknown field",
        ),
        (
            "sites:\n  hpc:\n    endpoint: not-a-uuid\n    resources: {cpu: 1}\n",
            "site 'hpc', field 'endpoint'",
        ),
        (
            "sites:\n  laptop:\n    local: missing.yaml\n    resources: {cpu: 1}\n",
            "site 'laptop', field 'local': endpoint YAML",
        ),
        (
            "sites:\n  laptop:\n    local: x.yaml\n    resources: {cpu: 1}\n"
            "scheduler: {policy: random}\n",
            "field 'scheduler.policy'",
        ),
        (
            "sites:\n  laptop:\n    local: x.yaml\n    resources: {cpu: 1}\nextra: 1\n",
            "field 'extra': unknown field",
        ),
        (
            "sites:\n  a:\n    local: x.yaml\n    resources: {cpu: 1}\n"
            "  a:\n    local: x.yaml\n    resources: {gpu: 1}\n",
            "duplicate key 'a'",
        ),
    ],
)
def test_each_mistake_names_file_site_and_field(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "x.yaml").write_text("engine: {type: GlobusComputeEngine}\n")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        SitesConfig.from_yaml(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    assert expected in message


def test_missing_sites_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read the sites YAML"):
        SitesConfig.from_yaml(tmp_path / "nope.yaml")


def test_local_path_may_start_with_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "cpu.yaml").write_text("engine: {type: GlobusComputeEngine}\n")
    path = write(tmp_path, "sites:\n  laptop:\n    local: ~/cpu.yaml\n    resources: {cpu: 1}\n")
    assert SitesConfig.from_yaml(path).sites["laptop"].local == tmp_path / "cpu.yaml"


def test_status_polling_faster_than_globus_allows_is_refused() -> None:
    sites = {
        f"hpc{i}": {"endpoint": f"5c9d8e1a-0000-4000-8000-00000000000{i}", "resources": {"cpu": 1}}
        for i in range(4)
    }
    with pytest.raises(
        ConfigError, match=r"status_period 1 s polls 4 globus sites .* at least 2 s"
    ):
        SitesConfig.from_dict({"sites": sites, "scheduler": {"status_period": 1}})
    assert SitesConfig.from_dict({"sites": sites, "scheduler": {"status_period": 2}}).sites


def test_static_policy_names_a_missing_site_or_map() -> None:
    site = {"a": {"sim": {"workers": {"cpu": 1}}, "resources": {"cpu": 1}}}
    with pytest.raises(ConfigError, match="maps method 'train' to site 'b', which does not exist"):
        SitesConfig.from_dict(
            {"sites": site, "scheduler": {"policy": "static", "static": {"train": "b"}}}
        )
    with pytest.raises(ConfigError, match="policy 'static' needs a method -> site map"):
        SitesConfig.from_dict({"sites": site, "scheduler": {"policy": "static"}})


def test_unknown_policy_and_bad_outage_are_named() -> None:
    with pytest.raises(ConfigError, match=r"field 'scheduler\.policy'"):
        SitesConfig.from_dict(
            {
                "sites": {"a": {"local": "x.yaml", "resources": {"cpu": 1}}},
                "scheduler": {"policy": "random"},
            }
        )
    bad = {"sim": {"workers": {"cpu": 1}, "outages": [[5, 2]]}, "resources": {"cpu": 1}}
    with pytest.raises(
        ConfigError, match=r"site 'a', field 'sim': outage \[5.0, 2.0\] ends before"
    ):
        SitesConfig.from_dict({"sites": {"a": bad}})


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        ({"kind": "s3"}, "data store 'shared': Input tag 's3'"),
        ({"kind": "file"}, "data store 'shared', field 'path': Field required"),
        ({"kind": "redis", "port": 0}, "data store 'shared', field 'port': Input should be"),
        ({"kind": "file", "path": "x", "host": "y"}, "data store 'shared', field 'host': unknown"),
    ],
)
def test_bad_data_stores_are_named(store: dict[str, object], expected: str) -> None:
    sites = {"a": {"sim": {"workers": {"cpu": 1}}, "resources": {"cpu": 1}}}
    with pytest.raises(ConfigError, match=re.escape(expected)):
        SitesConfig.from_dict({"sites": sites, "data": {"stores": {"shared": store}}})
