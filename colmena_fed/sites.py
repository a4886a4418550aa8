"""The sites YAML: which Globus Compute endpoints form the federation and what each offers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from colmena_fed.errors import ConfigError


class SiteConfig(BaseModel):
    """One site: a Globus Compute endpoint, reached by UUID or run in-process from its YAML."""

    model_config = ConfigDict(extra="forbid")

    endpoint: UUID | None = Field(
        default=None, description="UUID of the Globus Compute endpoint (a `globus` site)."
    )
    local: Path | None = Field(
        default=None,
        description=(
            "Endpoint YAML (Globus Compute config.yaml format) whose engine runs in-process "
            "(a `local` site); relative paths are relative to the sites YAML."
        ),
    )
    resources: dict[str, PositiveInt] = Field(
        description=(
            "Slots per kind (e.g. {cpu: 4} or {gpu: 2}): how many tasks of that kind the site "
            "may hold in flight. More slots than workers hides the round trip to the site."
        )
    )
    user_endpoint_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Variables for a multi-user endpoint's config template (`globus` sites).",
    )

    @model_validator(mode="after")
    def _one_backend(self) -> SiteConfig:
        if (self.endpoint is None) == (self.local is None):
            raise ValueError("give exactly one of 'endpoint: <UUID>' or 'local: <endpoint YAML>'")
        if not self.resources:
            raise ValueError("'resources' must offer at least one slot kind, e.g. {cpu: 2}")
        return self

    @property
    def backend(self) -> Literal["globus", "local"]:
        """Which backend serves this site."""
        return "local" if self.local is not None else "globus"


class SchedulerConfig(BaseModel):
    """How the task server places tasks."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["availability"] = Field(
        default="availability",
        description="Placement policy: 'availability' picks the site with most free slots.",
    )
    status_period: float = Field(
        default=2.0,
        gt=0,
        description="Seconds between status polls of each site.",
    )


class SitesConfig(BaseModel):
    """The whole sites YAML: the federation a task server drives."""

    model_config = ConfigDict(extra="forbid")

    sites: dict[str, SiteConfig] = Field(description="Sites by name.")
    scheduler: SchedulerConfig = Field(
        default_factory=SchedulerConfig, description="Placement settings."
    )
    source: Path | None = Field(
        default=None, exclude=True, description="File this configuration was read from."
    )

    @model_validator(mode="after")
    def _has_sites(self) -> SitesConfig:
        if not self.sites:
            raise ValueError("no sites: add at least one under 'sites:'")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> SitesConfig:
        """Read a sites YAML; raises `ConfigError` naming the file, site and field at fault."""
        path = Path(path)
        try:
            data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the sites YAML ({exc.strerror})") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_dict(data, source=path)

    @classmethod
    def from_dict(cls, data: Any, source: Path | None = None) -> SitesConfig:
        """Build from already-parsed YAML; relative `local:` paths resolve against ``source``."""
        where = str(source) if source else "sites configuration"
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping with a 'sites:' section")
        try:
            config = cls.model_validate({**data, "source": source})
        except ValidationError as exc:
            raise ConfigError(_describe(where, exc)) from exc
        base = source.parent if source else Path.cwd()
        for name, site in config.sites.items():
            if site.local is None:
                continue
            site.local = (base / site.local.expanduser()).resolve()
            if not site.local.is_file():
                raise ConfigError(
                    f"{where}: site {name!r}, field 'local': endpoint YAML {site.local} "
                    "does not exist"
                )
        return config


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _describe(where: str, exc: ValidationError) -> str:
    """One message naming the file, and for each problem the site and field."""
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if len(loc) >= 2 and loc[0] == "sites":
            place = f"site {loc[1]!r}"
            if len(loc) > 2:
                place += f", field {'.'.join(loc[2:])!r}"
        else:
            place = f"field {'.'.join(loc)!r}" if loc else "top level"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{place}: {message}")
    problems = "; ".join(lines)
    return f"{where}: {problems}"
