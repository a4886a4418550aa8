"""The stores of the ``data:`` section of the sites YAML, and the ProxyStore connectors for them."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID

from globus_sdk.scopes import TransferScopes
from proxystore.connectors.endpoint import EndpointConnector
from proxystore.connectors.globus import GlobusConnector, GlobusEndpoint
from proxystore.connectors.multi import MultiConnector, Policy
from proxystore.globus.app import get_user_app, is_client_login
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from colmena_fed.connectors import PrivateFileConnector, SecureRedisConnector
from colmena_fed.errors import ConfigError


class FileStoreSpec(BaseModel):
    """A store on a file system every site using it can read (ProxyStore's FileConnector)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["file"] = Field(description="'file': a directory on a shared file system.")
    path: Path = Field(description="The directory; relative paths are relative to the YAML.")


class RedisStoreSpec(BaseModel):
    """A Redis server every site using it can reach (ProxyStore's RedisConnector)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["redis"] = Field(description="'redis': a Redis server.")
    hostname: str = Field(default="127.0.0.1", description="Host name of the Redis server.")
    port: PositiveInt = Field(default=6379, description="Port of the Redis server.")
    password_env: str | None = Field(
        default=None,
        description=(
            "Environment variable holding the Redis password, read by every process that uses "
            "the store (the thinker and the sites' workers); the password itself never goes "
            "in the YAML."
        ),
    )
    password_file: Path | None = Field(
        default=None,
        description=(
            "File holding the Redis password (first line; mode 0600), at the same path "
            "wherever the store is used; relative paths are relative to the YAML."
        ),
    )
    tls: bool = Field(default=False, description="Connect with TLS.")
    timeout_s: PositiveFloat = Field(
        default=30.0,
        description="Seconds a connection or a command may take before the store call fails.",
    )

    @model_validator(mode="after")
    def _one_password_source(self) -> RedisStoreSpec:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("give password_env or password_file, not both")
        return self


class EndpointStoreSpec(BaseModel):
    """ProxyStore endpoints, peer to peer through a relay (ProxyStore's EndpointConnector).

    Each machine runs a ``proxystore-endpoint``; a process uses the one on its own machine,
    which fetches objects from the others through the relay.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["endpoint"] = Field(description="'endpoint': ProxyStore endpoints.")
    endpoints: list[UUID] = Field(
        min_length=1, description="UUIDs of the ProxyStore endpoints that make up the store."
    )
    proxystore_dir: Path | None = Field(
        default=None,
        description=(
            "Where the endpoints' configurations are ($PROXYSTORE_HOME); None: ProxyStore's "
            "default."
        ),
    )


class GlobusCollection(BaseModel):
    """One Globus collection of a `globus` store, and where its directory is seen locally."""

    model_config = ConfigDict(extra="forbid")

    uuid: UUID = Field(description="UUID of the Globus collection (a Globus Transfer endpoint).")
    endpoint_path: str = Field(description="The store's directory, as a path on the collection.")
    local_path: str = Field(
        description="The same directory, as a path on the hosts that match 'host_regex'."
    )
    host_regex: str = Field(description="Regular expression of the host names at this site.")


class GlobusStoreSpec(BaseModel):
    """Directories at several sites kept in step by Globus Transfer (ProxyStore's GlobusConnector).

    Every process putting or getting needs a Globus login with Transfer consent:
    ``proxystore-globus-auth login`` once per machine, or ``PROXYSTORE_GLOBUS_CLIENT_ID`` and
    ``PROXYSTORE_GLOBUS_CLIENT_SECRET`` for a service account.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["globus"] = Field(description="'globus': Globus Transfer between sites.")
    collections: list[GlobusCollection] = Field(
        min_length=2, description="The collections, one per site (at least two)."
    )
    polling_interval: PositiveInt = Field(
        default=1, description="Seconds between checks that a transfer has finished."
    )
    timeout: PositiveInt = Field(
        default=60, description="Seconds a get waits for its transfer before failing."
    )


class MultiMember(BaseModel):
    """One store of a `multi` store, and which objects it takes (ProxyStore's ``Policy``)."""

    model_config = ConfigDict(extra="forbid")

    store: str = Field(description="Name of another store under 'data: stores:'.")
    priority: int = Field(default=0, description="Higher wins when several stores qualify.")
    min_size_bytes: NonNegativeInt = Field(default=0, description="Smallest object it takes.")
    max_size_bytes: PositiveInt | None = Field(
        default=None, description="Largest object it takes; None: no limit."
    )
    host_pattern: list[str] | None = Field(
        default=None, description="Regular expressions of the host names it may be used on."
    )
    tags: list[str] = Field(
        default_factory=list,
        description=(
            "Tags it accepts: an object put with tags (see 'topic_tags') goes only to a member "
            "whose tags include all of them; an object without tags may go to any member."
        ),
    )


class MultiStoreSpec(BaseModel):
    """Several stores behind one, each object going to the first that qualifies (MultiConnector).

    For example small objects to Redis and large ones to a shared file system.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["multi"] = Field(description="'multi': a store made of other stores.")
    members: list[MultiMember] = Field(min_length=1, description="The stores and their policies.")


AnyStoreSpec = FileStoreSpec | RedisStoreSpec | EndpointStoreSpec | GlobusStoreSpec | MultiStoreSpec
StoreSpec = Annotated[AnyStoreSpec, Field(discriminator="kind")]

#: The store kinds a sites YAML may name.
STORE_KINDS = ("file", "redis", "endpoint", "globus", "multi")


class RedisChannelSpec(RedisStoreSpec):
    """A Redis server that carries intermediate results (one Redis stream per run).

    Workers append each value a streaming method sends; the thinker reads them in order, and
    they wait there while the thinker is slow or briefly away.
    """

    lost_after_s: PositiveFloat = Field(
        default=30.0,
        description=(
            "Seconds a finished task waits for intermediate results still on their way; past "
            "that they count as lost and the task is run again (a site failure)."
        ),
    )


class DataConfig(BaseModel):
    """The ``data:`` section of the sites YAML."""

    model_config = ConfigDict(extra="forbid")

    threshold_bytes: PositiveInt = Field(
        default=1_000_000,
        description="Inputs and results larger than this (serialized) travel through a store.",
    )
    topic_thresholds: dict[str, PositiveInt] = Field(
        default_factory=dict, description="Thresholds for the inputs of given topics."
    )
    topic_tags: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            "Tags of the input objects of given topics, steering them among the members of a "
            "'multi' store (see its members' 'tags')."
        ),
    )
    locality: bool = Field(
        default=False,
        description=(
            "Among sites otherwise equal for a task, prefer one whose own store (the first in "
            "its 'stores' list) holds the task's inputs."
        ),
    )
    stores: dict[str, StoreSpec] = Field(
        default_factory=dict,
        description=(
            "Stores by name. Inputs go to the first one listed; each site sends its large "
            "results to the first store in its own 'stores' list."
        ),
    )

    channels: dict[str, RedisChannelSpec] = Field(
        default_factory=dict,
        description=(
            "Channels by name, for intermediate results (methods that stream): each site "
            "streams through the first one in its own 'channels' list."
        ),
    )

    @model_validator(mode="after")
    def _members_exist(self) -> DataConfig:
        for name, spec in self.stores.items():
            if not isinstance(spec, MultiStoreSpec):
                continue
            for member in spec.members:
                other = self.stores.get(member.store)
                if other is None or isinstance(other, MultiStoreSpec):
                    raise ValueError(
                        f"data store {name!r}: member {member.store!r} must name a file, redis, "
                        f"endpoint or globus store under 'data: stores:'"
                    )
        return self


def connector(name: str, stores: Mapping[str, AnyStoreSpec]) -> Any:
    """A new ProxyStore connector for the store ``name``; ``stores`` holds every spec.

    Raises:
        ConfigError: A `globus` store on a machine with no Globus login (checked here,
            before ProxyStore would start an interactive login).
    """
    spec = stores[name]
    if isinstance(spec, FileStoreSpec):
        return PrivateFileConnector(str(spec.path), clear=False)
    if isinstance(spec, RedisStoreSpec):
        return SecureRedisConnector(
            spec.hostname,
            spec.port,
            password_env=spec.password_env,
            password_file=None if spec.password_file is None else str(spec.password_file),
            tls=spec.tls,
            timeout_s=spec.timeout_s,
        )
    if isinstance(spec, EndpointStoreSpec):
        home = None if spec.proxystore_dir is None else str(spec.proxystore_dir)
        return EndpointConnector([str(u) for u in spec.endpoints], home)
    if isinstance(spec, GlobusStoreSpec):
        _check_globus_login(name)
        collections = [
            GlobusEndpoint(str(c.uuid), c.endpoint_path, c.local_path, c.host_regex)
            for c in spec.collections
        ]
        return GlobusConnector(
            collections, clear=False, polling_interval=spec.polling_interval, timeout=spec.timeout
        )
    members = {}
    for member in spec.members:
        policy = Policy(
            priority=member.priority,
            min_size_bytes=member.min_size_bytes,
            max_size_bytes=member.max_size_bytes or sys.maxsize,
            host_pattern=member.host_pattern,
            subset_tags=member.tags,
        )
        members[member.store] = (connector(member.store, stores), policy)
    return MultiConnector(members)


def _check_globus_login(name: str) -> None:
    """Refuse a `globus` store when this machine holds no Globus Transfer login."""
    if is_client_login():
        return
    app = get_user_app()
    app.add_scope_requirements({TransferScopes.resource_server: [TransferScopes.all]})
    if app.login_required():
        raise ConfigError(
            f"data store {name!r} (globus): this machine has no Globus login with Transfer "
            "consent; run 'proxystore-globus-auth login' here and on every site, or set "
            "PROXYSTORE_GLOBUS_CLIENT_ID and PROXYSTORE_GLOBUS_CLIENT_SECRET"
        )
