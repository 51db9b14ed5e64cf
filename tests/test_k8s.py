"""docker/k8s/: the Kubernetes manifests validate offline against the API schemas (kubernetes-validate ships them), and
they agree with the server: every LCS_* variable is an `lcs serve` flag (the one other is glibc's MALLOC_ARENA_MAX),
the probes are its routes, and the objects point at each other by the names they carry."""

from pathlib import Path
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

from cli import build_parser
from service.api import router
from service.config import MALLOC_ARENA_MAX

K8S = Path(__file__).resolve().parent.parent / "docker" / "k8s"
VERSION = "1.33"  # a Kubernetes release the schemas cover and clusters run


def docs() -> dict[str, dict]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        for d in yaml.safe_load_all(path.read_text()):
            out[f"{d['kind']}/{d['metadata']['name']}"] = d
    return out


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_each_manifest_validates_against_the_kubernetes_schemas(path):
    for d in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(d, VERSION, strict=True)


def test_a_wrong_field_would_be_caught():
    d = docs()["Deployment/lcs"]
    d["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(d, VERSION, strict=True)


def serve_flags() -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["serve"]
    return {
        "LCS_" + a.option_strings[-1].lstrip("-").replace("-", "_").upper() for a in sub._actions if a.option_strings
    }


def test_every_variable_is_a_serve_flag_and_every_probe_a_route():
    d, flags = docs(), serve_flags()
    config = d["ConfigMap/lcs-config"]["data"]
    assert set(config) <= flags | {"MALLOC_ARENA_MAX"}
    routes = {r.path for r in router.routes}
    for name in ("Deployment/lcs", "Deployment/lcs-gpu"):
        (c,) = d[name]["spec"]["template"]["spec"]["containers"]
        assert {e["name"] for e in c["env"]} <= flags | {"LCS_ADMIN_TOKEN"}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["path"] in routes
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_the_objects_point_at_each_other():
    d = docs()
    for name in ("Deployment/lcs", "Deployment/lcs-gpu"):
        spec = d[name]["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        assert d["Service/lcs"]["spec"]["selector"].items() <= labels.items()
        assert d["PodDisruptionBudget/lcs"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        (volume,) = spec["template"]["spec"]["volumes"]
        assert "emptyDir" in volume  # the registry is in S3: a pod keeps nothing that must outlive it
        (c,) = spec["template"]["spec"]["containers"]
        assert f"ConfigMap/{c['envFrom'][0]['configMapRef']['name']}" in d
        assert f"Secret/{c['envFrom'][1]['secretRef']['name']}" in d
        token = next(e for e in c["env"] if e["name"] == "LCS_ADMIN_TOKEN")["valueFrom"]["secretKeyRef"]["name"]
        assert f"Secret/{token}" in d
    assert d["HorizontalPodAutoscaler/lcs"]["spec"]["scaleTargetRef"]["name"] == "lcs"
    notify = urlparse(d["ConfigMap/lcs-config"]["data"]["LCS_NOTIFY"])
    assert (
        f"Service/{notify.hostname}" in d and d[f"Service/{notify.hostname}"]["spec"]["ports"][0]["port"] == notify.port
    )
    assert set(d["Secret/lcs-s3"]["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
    gpu = d["Deployment/lcs-gpu"]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == 1


def test_the_manifests_and_images_limit_malloc_arenas_as_lcs_serve_does():
    """MALLOC_ARENA_MAX is no flag (glibc reads it as a process starts): the ConfigMap and both images set it to the
    default `lcs serve` would set itself."""
    assert docs()["ConfigMap/lcs-config"]["data"]["MALLOC_ARENA_MAX"] == str(MALLOC_ARENA_MAX)
    for image in ("Dockerfile", "Dockerfile.cuda"):
        assert f"MALLOC_ARENA_MAX={MALLOC_ARENA_MAX}\n" in (K8S.parent / image).read_text(), image
