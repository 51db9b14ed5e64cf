"""The label-set registry every replica shares: admission checks, immutable versions and an atomic pointer.

``admission``: what may be published (names, artifacts) and a version's content id; ``base``: ``RegistryBase``, the
pointer rules every backend shares; two backends: ``file`` (``Registry``, DATA/registry, the default) and ``s3``
(``S3Registry``, S3-compatible object storage for replicas on several machines). ``open_registry`` below picks one
from a URL.
"""

from __future__ import annotations

from pathlib import Path

from service.registry.admission import (
    FILES,
    NAME_RE,
    RegistryError,
    check_name,
    check_safetensors_header,
    content_id,
    validate_artifact,
)
from service.registry.base import STALE_STAGING_S, RegistryBase
from service.registry.file import Registry
from service.registry.s3 import S3Registry

__all__ = [
    "FILES",
    "NAME_RE",
    "STALE_STAGING_S",
    "Registry",
    "RegistryBase",
    "RegistryError",
    "S3Registry",
    "check_name",
    "check_safetensors_header",
    "content_id",
    "open_registry",
    "validate_artifact",
]


def open_registry(url: str, data_dir: str | Path, endpoint: str = "", notify: str = "") -> RegistryBase:
    """The registry a URL names: '' (DATA/registry), ``file://DIR`` or ``s3://BUCKET/PREFIX``; with ``notify``
    (``redis://HOST:PORT/DB``) every write publishes a change notice that replicas subscribe to."""
    if not url:
        reg: RegistryBase = Registry(data_dir)
    elif url.startswith("file://"):
        reg = Registry(data_dir, root=url.removeprefix("file://"))
    elif url.startswith("s3://"):
        reg = S3Registry(url, data_dir, endpoint)
    else:
        raise ValueError(f"registry URL {url!r}: use file://DIR or s3://BUCKET/PREFIX")
    if notify:
        from service.notify import RedisNotices

        reg.notifier = RedisNotices(notify, reg.url)
    reg.spec = {"registry": url, "registry_endpoint": endpoint, "notify": notify}
    return reg
