"""The sites YAML: which Globus Compute endpoints form the federation and what each offers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import yaml
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from colmena_fed.errors import ConfigError
from colmena_fed.files import UniqueKeyLoader, read_config_text
from colmena_fed.stores import (
    STORE_KINDS,
    DataConfig,
    EndpointStoreSpec,
    FileStoreSpec,
    RedisStoreSpec,
)

#: Globus Compute's limit on status requests: 20 per 10 s per client.
GLOBUS_STATUS_RATE = 2.0


class SimSiteConfig(BaseModel):
    """A simulated site (backend ``sim``): workers and behaviour, in virtual time."""

    model_config = ConfigDict(extra="forbid")

    workers: dict[str, NonNegativeInt] = Field(
        description="Workers per slot kind, e.g. {gpu: 4}; a task runs on a worker of its kind."
    )
    speed: PositiveFloat = Field(
        default=1.0, description="Speed factor: a task runs in its work / speed seconds."
    )
    startup: NonNegativeFloat = Field(
        default=0.0, description="Seconds before the site's workers exist (a batch job queuing)."
    )
    latency: NonNegativeFloat = Field(
        default=0.0, description="Seconds a task spends travelling to and from the site."
    )
    outages: list[tuple[NonNegativeFloat, PositiveFloat]] = Field(
        default_factory=list,
        description=(
            "Times [start, end) in seconds from the start of the run when the site is down; "
            "tasks running there when it goes down are lost."
        ),
    )

    @model_validator(mode="after")
    def _outages_ordered(self) -> SimSiteConfig:
        previous_end = 0.0
        for start, end in self.outages:
            if end <= start:
                raise ValueError(f"outage [{start}, {end}] ends before it starts")
            if start < previous_end:
                raise ValueError(
                    f"outage [{start}, {end}] starts before the one before it ends; list "
                    "outages in time order, without overlaps"
                )
            previous_end = end
        return self


class WarmConfig(BaseModel):
    """What a site's workers keep warm between tasks, and how long the server counts on it."""

    model_config = ConfigDict(extra="forbid")

    max_items: PositiveInt = Field(
        default=2,
        description="Objects each worker keeps; past it the least recently used is dropped.",
    )
    max_bytes: ByteSize | None = Field(
        default=None,
        description=(
            "Bytes each worker keeps (of objects whose size is known: warm(..., nbytes=) or a "
            "numpy array's own), e.g. '8GB'; None: no bound but max_items."
        ),
    )
    forget_after: PositiveFloat | None = Field(
        default=None,
        description=(
            "Seconds idle after which the task server no longer counts on the site's workers "
            "being warm (its block may have ended). None: the endpoint YAML's engine "
            "max_idletime for a local site, else Globus Compute's default, 120 s."
        ),
    )


class SiteConfig(BaseModel):
    """One site: a Globus Compute endpoint (by UUID), an endpoint YAML run here, or a model."""

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
    sim: SimSiteConfig | None = Field(
        default=None, description="A simulated site, for tests and benchmarks (a `sim` site)."
    )
    resources: dict[str, PositiveInt] = Field(
        description=(
            "Slots per kind (e.g. {cpu: 4} or {gpu: 2}): how many tasks of that kind the site "
            "may hold in flight. More slots than workers hides the round trip to the site."
        )
    )
    stores: list[str] | None = Field(
        default=None,
        description=(
            "Names of the data stores (under 'data: stores:') this site can read and write; "
            "its large results go to the first. None: every store."
        ),
    )
    channels: list[str] | None = Field(
        default=None,
        description=(
            "Names of the channels (under 'data: channels:') this site's workers reach; its "
            "streaming tasks use the first. None: every channel."
        ),
    )
    prefetch: NonNegativeInt = Field(
        default=0,
        description=(
            "Tasks the site may hold beyond its live worker count, queued there to hide the "
            "round trip (and, for a site scaled to zero, to make its provider start a block)."
        ),
    )
    user_endpoint_config: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Variables for the endpoint's config template ({{ account }} in its YAML): sent "
            "with every task to a `globus` site; a `local` site's YAML is rendered with them."
        ),
    )
    resource_specification: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Globus Compute resource specification sent with every task (`globus` sites), "
            "e.g. {num_nodes: 2, ranks_per_node: 4} for an MPI engine."
        ),
    )
    nodes_per_block: PositiveInt | None = Field(
        default=None,
        description=(
            "The site runs a GlobusMPIEngine whose blocks have this many nodes: its slots then "
            "count nodes, and it runs only tasks with a resource specification (`globus` "
            "sites; a `local` site's is read from its endpoint YAML)."
        ),
    )
    warm: WarmConfig = Field(
        default_factory=WarmConfig,
        description="What its workers keep warm between tasks (`colmena_fed.warm`).",
    )
    batch_size: PositiveInt = Field(
        default=128,
        description=(
            "Most tasks per submission to Globus Compute (`globus` sites); a submission, "
            "batch included, must stay under 10 MB."
        ),
    )

    @model_validator(mode="after")
    def _one_backend(self) -> SiteConfig:
        given = [self.endpoint, self.local, self.sim]
        if sum(value is not None for value in given) != 1:
            raise ValueError(
                "give exactly one of 'endpoint: <UUID>', 'local: <endpoint YAML>' or 'sim: {...}'"
            )
        if not self.resources:
            raise ValueError("'resources' must offer at least one slot kind, e.g. {cpu: 2}")
        if self.sim is not None and self.nodes_per_block is not None:
            raise ValueError("'nodes_per_block': sim sites do not model MPI engines")
        return self

    @property
    def backend(self) -> Literal["globus", "local", "sim"]:
        """Which backend serves this site."""
        if self.local is not None:
            return "local"
        return "sim" if self.sim is not None else "globus"


class SchedulerConfig(BaseModel):
    """How the task server places tasks."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["availability", "fastest", "round_robin", "static"] = Field(
        default="availability",
        description=(
            "Placement policy: 'availability' (most free slots), 'fastest' (earliest expected "
            "finish, learned), or the baselines 'round_robin' and 'static'."
        ),
    )
    static: dict[str, str] = Field(
        default_factory=dict,
        description="For policy 'static': method name -> site name.",
    )
    status_period: PositiveFloat = Field(
        default=2.0,
        description=(
            "Seconds between status polls of each site (Globus Compute allows 20 status "
            "requests per 10 s per client: keep it >= 0.5 x the number of globus sites)."
        ),
    )
    stale_after: PositiveFloat | None = Field(
        default=None,
        description=(
            "A site whose last good status is older than this many seconds counts as offline; "
            "None: 5 status periods."
        ),
    )
    warm: bool = Field(
        default=True,
        description=(
            "Send a task with a warm key (send_inputs(..., warm=key)) where its key is warm, "
            "weighed against waiting; false: place it as any other task."
        ),
    )

    @property
    def staleness(self) -> float:
        """Seconds after which a site's status is stale."""
        return self.stale_after if self.stale_after is not None else 5 * self.status_period


class LoadModel(BaseModel):
    """How long a method's tasks take in a simulation (seconds at speed 1.0)."""

    model_config = ConfigDict(extra="forbid")

    distribution: Literal["constant", "exponential", "lognormal", "uniform"] = Field(
        default="constant", description="Shape of the run-time distribution."
    )
    mean: PositiveFloat = Field(description="Mean run time in seconds.")
    sigma: NonNegativeFloat = Field(
        default=0.5,
        description="'lognormal': sigma of the log; 'uniform': half-width as a fraction of mean.",
    )


class SimConfig(BaseModel):
    """Settings shared by every simulated site."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(default=0, description="Seed of the random run times.")
    methods: dict[str, LoadModel] = Field(
        default_factory=dict,
        description=(
            "Run time per method name, in seconds at speed 1.0; methods not listed take 1 s. "
            "SimWorld.set_work fixes one task's run time instead."
        ),
    )
    loads: dict[str, LoadModel] = Field(
        default_factory=dict,
        description=(
            "Time per method name that a task sent with a warm key spends loading it on a "
            "worker that does not hold it (a miss), before its work; methods not listed load "
            "in no time. Each worker holds its site's warm.max_items keys."
        ),
    )
    intermediates: dict[str, NonNegativeInt] = Field(
        default_factory=dict,
        description=(
            "Intermediate results each streaming method sends in the model, at even intervals "
            "of its run (through the site's real channel; each value is its sequence number)."
        ),
    )


class GlobusConfig(BaseModel):
    """How `globus` sites reach the Globus Compute service."""

    model_config = ConfigDict(extra="forbid")

    service: Literal["cloud", "testbed"] = Field(
        default="cloud",
        description=(
            "'cloud': the Globus Compute service, with your Globus login (or "
            "GLOBUS_COMPUTE_CLIENT_ID/GLOBUS_COMPUTE_CLIENT_SECRET); 'testbed': the local "
            "stand-in started by 'colmena-fed testbed up', with the token it keeps."
        ),
    )
    testbed_dir: Path | None = Field(
        default=None,
        description=(
            "The testbed's directory, where its token is ('testbed' service; default: "
            "~/.colmena-fed/testbed, that of 'colmena-fed testbed up' without --dir); relative "
            "paths are relative to the YAML."
        ),
    )


class SitesConfig(BaseModel):
    """The whole sites YAML: the federation a task server drives."""

    model_config = ConfigDict(extra="forbid")

    sites: dict[str, SiteConfig] = Field(description="Sites by name.")
    scheduler: SchedulerConfig = Field(
        default_factory=SchedulerConfig, description="Placement settings."
    )
    sim: SimConfig = Field(
        default_factory=SimConfig, description="Settings of simulated ('sim') sites."
    )
    data: DataConfig = Field(
        default_factory=DataConfig, description="ProxyStore stores for large inputs and results."
    )
    globus: GlobusConfig = Field(
        default_factory=GlobusConfig, description="How `globus` sites reach Globus Compute."
    )
    source: Path | None = Field(
        default=None, exclude=True, description="File this configuration was read from."
    )

    @model_validator(mode="after")
    def _has_sites(self) -> SitesConfig:
        if not self.sites:
            raise ValueError("no sites: add at least one under 'sites:'")
        simulated = {name for name, site in self.sites.items() if site.sim is not None}
        if simulated and simulated != set(self.sites):
            real = ", ".join(sorted(set(self.sites) - simulated))
            raise ValueError(
                f"'sim' sites run in virtual time and cannot be mixed with real ones ({real})"
            )
        for name, config in self.sites.items():
            unknown = [s for s in config.stores or [] if s not in self.data.stores]
            if unknown:
                raise ValueError(
                    f"site {name!r}, field 'stores': no store named {unknown[0]!r} under "
                    f"'data: stores:'; stores: {', '.join(self.data.stores) or 'none'}"
                )
            unknown = [c for c in config.channels or [] if c not in self.data.channels]
            if unknown:
                raise ValueError(
                    f"site {name!r}, field 'channels': no channel named {unknown[0]!r} under "
                    f"'data: channels:'; channels: {', '.join(self.data.channels) or 'none'}"
                )
        for method, site in self.scheduler.static.items():
            if site not in self.sites:
                raise ValueError(
                    f"scheduler.static maps method {method!r} to site {site!r}, which does not "
                    f"exist; sites: {', '.join(self.sites)}"
                )
        remote = sum(site.endpoint is not None for site in self.sites.values())
        if remote / self.scheduler.status_period > GLOBUS_STATUS_RATE:
            raise ValueError(
                f"scheduler.status_period {self.scheduler.status_period:g} s polls {remote} "
                f"globus sites faster than Globus Compute allows ({GLOBUS_STATUS_RATE:g} status "
                f"requests per second per client); use at least "
                f"{remote / GLOBUS_STATUS_RATE:g} s"
            )
        if self.scheduler.policy == "static" and not self.scheduler.static:
            raise ValueError("policy 'static' needs a method -> site map under scheduler.static")
        return self

    def check_methods(self, slots: Mapping[str, str], streaming: Iterable[str] = ()) -> None:
        """Refuse what no site could run.

        A static map naming an unknown method or a site without its slot kind, or a streaming
        method no site offering its slot kind can stream from (no channel it reaches).

        ``slots`` gives the slot kind each method of the task server needs; ``streaming``
        names the methods that stream intermediate results.
        """
        where = self.source or "sites configuration"
        channels = self.channel_reach()
        for method in streaming:
            offering = [name for name, s in self.sites.items() if slots[method] in s.resources]
            if offering and not any(channels[name] for name in offering):
                raise ConfigError(
                    f"{where}: method {method!r} streams intermediate results, but no site "
                    f"offering a {slots[method]!r} slot reaches a channel (sites "
                    f"{', '.join(offering)}): name one under 'data: channels:' and list it in "
                    "those sites' 'channels'"
                )
        for method, site in self.scheduler.static.items():
            slot = slots.get(method)
            if slot is None:
                raise ConfigError(
                    f"{where}: scheduler.static names method {method!r}, which the task server "
                    f"was not given; methods: {', '.join(slots)}"
                )
            offered = self.sites[site].resources
            if slot not in offered:
                raise ConfigError(
                    f"{where}: scheduler.static sends method {method!r} (needs a {slot!r} "
                    f"slot) to site {site!r}, which offers only {', '.join(offered)}"
                )

    def reach(self) -> dict[str, list[str]]:
        """The stores each site can use, in its order of preference."""
        every = list(self.data.stores)
        return {name: every if s.stores is None else s.stores for name, s in self.sites.items()}

    def channel_reach(self) -> dict[str, list[str]]:
        """The channels each site's workers reach, in its order of preference."""
        every = list(self.data.channels)
        return {name: every if s.channels is None else s.channels for name, s in self.sites.items()}

    @property
    def simulated(self) -> bool:
        """Whether the federation is simulated (every site a `sim` site)."""
        return all(site.sim is not None for site in self.sites.values())

    @classmethod
    def from_yaml(cls, path: str | Path) -> SitesConfig:
        """Read a sites YAML; raises `ConfigError` naming the file, site and field at fault."""
        path = Path(path)
        text = read_config_text(path, "sites YAML")
        try:
            data = yaml.load(text, Loader=UniqueKeyLoader)
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
        if config.globus.testbed_dir is not None:
            config.globus.testbed_dir = (base / config.globus.testbed_dir.expanduser()).resolve()
        for spec in config.data.stores.values():
            if isinstance(spec, FileStoreSpec):
                spec.path = (base / spec.path.expanduser()).resolve()
            elif isinstance(spec, RedisStoreSpec) and spec.password_file is not None:
                spec.password_file = (base / spec.password_file.expanduser()).resolve()
            elif isinstance(spec, EndpointStoreSpec) and spec.proxystore_dir is not None:
                spec.proxystore_dir = (base / spec.proxystore_dir.expanduser()).resolve()
        for channel in config.data.channels.values():
            if channel.password_file is not None:
                channel.password_file = (base / channel.password_file.expanduser()).resolve()
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


def _describe(where: str, exc: ValidationError) -> str:
    """One message naming the file, and for each problem the site and field."""
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if len(loc) >= 2 and loc[0] == "sites":
            place = f"site {loc[1]!r}"
            if len(loc) > 2:
                place += f", field {'.'.join(loc[2:])!r}"
        elif len(loc) >= 3 and loc[:2] == ["data", "stores"]:
            place = f"data store {loc[2]!r}"
            fields = loc[4:] if len(loc) > 3 and loc[3] in STORE_KINDS else loc[3:]
            if fields:
                place += f", field {'.'.join(fields)!r}"
        elif len(loc) >= 3 and loc[:2] == ["data", "channels"]:
            place = f"channel {loc[2]!r}"
            if len(loc) > 3:
                place += f", field {'.'.join(loc[3:])!r}"
        else:
            place = f"field {'.'.join(loc)!r}" if loc else "top level"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{place}: {message}")
    problems = "; ".join(lines)
    return f"{where}: {problems}"
