"""Deployable cluster definitions validate against their schemas and agree with the scheduler's presets.

* Core Kubernetes kinds (Secret, PersistentVolumeClaim) against the Kubernetes OpenAPI schemas shipped by
  ``kubernetes-validate`` (strict: unknown fields are errors).
* KubeRay ``RayCluster``/``RayJob`` against the ray.io/v1 schemas in ``cluster/schemas/`` (their pod
  templates against the same Kubernetes schemas).
* The Ray cluster-launcher YAML against Ray's own ``ray-schema.json``.
* Cross-references: Secret keys, volumes and claims exist; GPU groups request GPUs in pods and in Ray;
  ``conf/cluster/<name>.yaml`` exists for every ``cluster/<name>/``; the RayJob's entrypoint composes.
Fast (no processes started).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
K8S_VERSION = "1.30"


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_manifests() -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(CLUSTER.glob("*/*.yaml")) if p.parent.name != "aws_gpu" for d in docs(p)]


def ray_validator(kind: str) -> jsonschema.Validator:
    """Draft 2020-12 validator of a ray.io/v1 kind, resolving Kubernetes refs to kubernetes-validate's schemas."""
    import kubernetes_validate
    from referencing import Registry, Resource

    schema = json.loads((CLUSTER / "schemas" / f"{kind.lower()}-ray-v1.json").read_text())
    k8s_dir = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    version = max((d for d in k8s_dir.iterdir() if d.name.endswith("-local-strict")), key=lambda d: [
        int(x) for x in d.name[1:].split("-")[0].split(".")])
    defs = json.loads((version / "_definitions.json").read_text())
    registry = Registry().with_resources([(defs["$id"], Resource.from_contents(defs)),
                                          (schema["$id"], Resource.from_contents(schema))])
    return jsonschema.Draft202012Validator(schema, registry=registry)


def test_every_manifest_validates_against_kubernetes_or_kuberay_schemas():
    import kubernetes_validate

    kinds = []
    for path, d in all_manifests():
        kinds.append(d["kind"])
        if d["apiVersion"] == "ray.io/v1":
            errors = sorted(ray_validator(d["kind"]).iter_errors(d), key=lambda e: list(e.path))
            assert not errors, f"{path.name}: " + "; ".join(f"{'.'.join(map(str, e.path))}: {e.message[:200]}" for e in errors[:5])
        else:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    assert {"RayCluster", "RayJob", "Secret", "PersistentVolumeClaim"} <= set(kinds)


def test_the_ray_schemas_reject_what_kuberay_rejects():
    rc = next(d for _, d in all_manifests() if d["kind"] == "RayCluster")
    v = ray_validator("RayCluster")
    typo = json.loads(json.dumps(rc))
    typo["spec"]["workerGroupSpec"] = typo["spec"].pop("workerGroupSpecs")  # misspelt field
    assert not v.is_valid(typo)
    no_template = json.loads(json.dumps(rc))
    del no_template["spec"]["workerGroupSpecs"][0]["template"]
    assert not v.is_valid(no_template)
    bad_container = json.loads(json.dumps(rc))
    bad_container["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 7
    assert not v.is_valid(bad_container)
    bad_param = json.loads(json.dumps(rc))
    bad_param["spec"]["workerGroupSpecs"][0]["rayStartParams"]["num-gpus"] = 8  # KubeRay wants strings
    assert not v.is_valid(bad_param)


def _cluster_specs():
    for path, d in all_manifests():
        if d["kind"] == "RayCluster":
            yield path, d["spec"]
        elif d["kind"] == "RayJob":
            yield path, d["spec"]["rayClusterSpec"]


def _pod_specs(spec: dict):
    yield "head", spec["headGroupSpec"]["template"]["spec"], spec["headGroupSpec"].get("rayStartParams", {})
    for g in spec.get("workerGroupSpecs", []):
        yield g["groupName"], g["template"]["spec"], g.get("rayStartParams", {})


def test_pods_reference_existing_secrets_volumes_and_claims_and_gpu_groups_ask_for_gpus():
    secrets = {d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {}))
               for _, d in all_manifests() if d["kind"] == "Secret"}
    claims = {d["metadata"]["name"] for _, d in all_manifests() if d["kind"] == "PersistentVolumeClaim"}
    gpu_groups = 0
    for path, spec in _cluster_specs():
        for group, pod, params in _pod_specs(spec):
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for c in pod["containers"]:
                env = {e["name"]: e for e in c.get("env", [])}
                assert env["RAY_AUTH_MODE"]["value"] == "token", (path.name, group)
                ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]  # the token only ever from a Secret
                assert ref["key"] in secrets[ref["name"]], (path.name, group)
                for e in env.values():
                    if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]:
                        assert e["valueFrom"]["secretKeyRef"]["key"] in secrets[e["valueFrom"]["secretKeyRef"]["name"]]
                for m in c.get("volumeMounts", []):
                    assert m["name"] in volumes, (path.name, group, m["name"])
                mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
                assert "/mnt/shared" in mounts, f"{path.name}/{group}: checkpoints need the shared volume"
                gpus = c["resources"]["limits"].get("nvidia.com/gpu")
                if gpus:
                    gpu_groups += 1
                    assert c["resources"]["requests"]["nvidia.com/gpu"] == gpus
                    assert params.get("num-gpus") == str(gpus), "Ray must advertise the pod's GPUs"
                    assert "/dev/shm" in mounts
            for v in volumes.values():
                if "persistentVolumeClaim" in v:
                    assert v["persistentVolumeClaim"]["claimName"] in claims
        for g in spec.get("workerGroupSpecs", []):
            assert g.get("minReplicas", 0) <= g.get("replicas", 0) <= g.get("maxReplicas", 2**31 - 1)
    assert gpu_groups >= 2


def test_cluster_launcher_yaml_validates_against_rays_schema():
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    cfg = yaml.safe_load((CLUSTER / "aws_gpu" / "cluster.yaml").read_text())
    jsonschema.validate(cfg, schema)
    assert cfg["head_node_type"] in cfg["available_node_types"]
    assert sum(t.get("max_workers", 0) for t in cfg["available_node_types"].values()) >= cfg["max_workers"]
    assert any("RAY_AUTH_MODE=token" in c for c in cfg["head_start_ray_commands"])


@pytest.mark.parametrize("name", sorted(p.name for p in CLUSTER.iterdir() if p.is_dir() and p.name != "schemas"))
def test_every_cluster_definition_has_a_scheduler_preset(name):
    preset = "local_head" if name == "local" else name  # cluster/local/ starts what local_head joins
    cfg = yaml.safe_load((REPO / "conf" / "cluster" / f"{preset}.yaml").read_text())
    assert cfg["address"] == "auto"


def test_rayjob_entrypoint_composes_to_the_gpu_node_preset(monkeypatch):
    from orchestrator.kinds import load

    job = next(d for _, d in all_manifests() if d["kind"] == "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "jobs.pretrain"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    cfg = load("pretrain", argv[3:])
    assert cfg.cluster.name == "gpu_node" and cfg.cluster.use_gpu and cfg.cluster.num_workers == 8
    assert cfg.tracking.uri == "http://mlflow.example:5000" and cfg.workspace == "/mnt/shared/outputs"
    assert cfg.output_dir.startswith("/mnt/shared/") and cfg.cluster.storage_path.startswith("/mnt/shared/")
