#!/usr/bin/env python3
"""The checks behind deploy/validate.sh: run that script, which installs what this needs (PyYAML and
kubernetes-validate) and finds the mirrorgate binary and a kustomize renderer.

Every check prints one line (ok / FAIL / skip); the exit status is 1 when any check failed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import traceback
import urllib.request
from pathlib import Path, PurePosixPath

import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError
from kubernetes_validate.utils import validate as schema_validate

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = DEPLOY / "kubernetes"
NODES = DEPLOY / "nodes"
CONTAINERFILE = DEPLOY / "Containerfile"
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

APP_LABEL = ("app.kubernetes.io/name", "mirrorgate")
# CRD kinds with no schema in kubernetes-validate, checked for shape instead.
SHAPE_CHECKED = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
# Kinds without a namespace (Kustomize's `namespace:` leaves them alone).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
# What the `kubernetes:` rule source reads (src/kubernetes/discovery.rs, `Kind`): the ClusterRole
# must grant exactly get/list/watch on these, and nothing else.
MIRROR_RULE_RESOURCES = {
    ("operator.openshift.io", "imagecontentsourcepolicies"),
    ("config.openshift.io", "imagedigestmirrorsets"),
    ("config.openshift.io", "imagetagmirrorsets"),
    ("hypershift.openshift.io", "hostedclusters"),
    ("hypershift.openshift.io", "nodepools"),
    ("", "configmaps"),
}
READ_VERBS = {"get", "list", "watch"}
# Volume types the restricted-v2 SCC (and the "restricted" Pod Security Standard) allow.
RESTRICTED_VOLUMES = {
    "configMap",
    "secret",
    "emptyDir",
    "persistentVolumeClaim",
    "projected",
    "downwardAPI",
    "ephemeral",
    "csi",
}
# mirrorgate's own memory besides cache.memory (the manual: the process needs cache.memory + ~64 MiB).
PROCESS_OVERHEAD = 64 << 20
# How long mirrorgate lets in-flight requests finish after SIGTERM (src/http/server.rs).
MIRRORGATE_GRACE_SECONDS = 30
COMPONENTS = KUSTOMIZATIONS / "components"
BASE = KUSTOMIZATIONS / "base"
COMPONENT_API = "kustomize.config.k8s.io/v1alpha1"


class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0
        self.skipped = 0

    def section(self, title: str) -> None:
        print(f"\n{title}")

    def ok(self, what: str) -> None:
        self.passed += 1
        print(f"  ok    {what}")

    def fail(self, what: str) -> None:
        self.failures.append(what)
        print(f"  FAIL  {what}")

    def skip(self, what: str) -> None:
        self.skipped += 1
        print(f"  skip  {what}")

    def check(self, condition: bool, what: str, why: str = "") -> bool:
        if condition:
            self.ok(what)
        else:
            self.fail(f"{what}: {why}" if why else what)
        return condition


R = Report()


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def load_yaml_docs(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def kustomization_file(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


def describe(obj: dict) -> str:
    return f"{obj.get('kind', '?')}/{obj.get('metadata', {}).get('name', '?')}"


# ---------------------------------------------------------------------------------------------
# Kustomizations: referenced files, the built-in reader, rendering


def generator_file_path(entry: str) -> tuple[str, str]:
    """A generator `files` entry is `path` or `key=path`; returns (key, path)."""
    key, sep, path = entry.partition("=")
    if not sep:
        path = entry
        key = PurePosixPath(entry).name
    return key, path


def check_kustomization_files(directory: Path) -> None:
    """Everything a kustomization names exists, and every manifest beside it is named."""
    kfile = kustomization_file(directory)
    k = load_yaml_docs(kfile)[0]
    referenced: set[Path] = set()
    missing: list[str] = []

    def need(entry: str, what: str, want_dir: bool | None = None) -> None:
        if re.match(r"^[a-z]+://|^github\.com/", entry):
            R.skip(f"{rel(kfile)}: {what} {entry} is remote, not checked")
            return
        path = (directory / entry).resolve()
        if want_dir is not False and path.is_dir():
            if kustomization_file(path) is None:
                missing.append(f"{what} {entry} is a directory without a kustomization.yaml")
            return
        if not path.is_file():
            missing.append(f"{what} {entry} does not exist")
            return
        referenced.add(path)

    for entry in k.get("resources") or []:
        need(entry, "resource")
    for entry in k.get("components") or []:
        need(entry, "component", want_dir=True)
    for entry in k.get("crds") or []:
        need(entry, "crd")
    for kind in ("configMapGenerator", "secretGenerator"):
        for gen in k.get(kind) or []:
            for entry in gen.get("files") or []:
                need(
                    generator_file_path(entry)[1], f"{kind} {gen.get('name')} file", want_dir=False
                )
            for entry in gen.get("envs") or ([gen["env"]] if gen.get("env") else []):
                need(entry, f"{kind} {gen.get('name')} env file", want_dir=False)
    for patch in k.get("patches") or []:
        if patch.get("path"):
            need(patch["path"], "patch")
    for entry in k.get("patchesStrategicMerge") or []:
        if "\n" not in entry:
            need(entry, "patchesStrategicMerge")

    for problem in missing:
        R.fail(f"{rel(kfile)}: {problem}")

    # Manifests beside the kustomization (not in a nested kustomization) that it does not name are
    # most likely forgotten: `kubectl apply -k` would silently leave them out.
    unlisted = []
    for path in sorted(directory.rglob("*")):
        if path.suffix not in (".yaml", ".yml") or path == kfile:
            continue
        nested = any(
            kustomization_file(parent)
            for parent in path.parents
            if parent != directory and directory in parent.parents
        )
        if not nested and path.resolve() not in referenced:
            unlisted.append(rel(path))
    R.check(
        not unlisted,
        f"{rel(kfile)}: every manifest and generator file beside it is listed",
        f"not listed: {', '.join(unlisted)}",
    )
    if not missing:
        R.ok(f"{rel(kfile)}: all {len(referenced)} referenced files exist")


class Unsupported(Exception):
    pass


READER_KEYS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "images"}


def read_kustomization(directory: Path) -> list[dict]:
    """A small reader for the parts of Kustomize this repository uses (resources, namespace, images,
    configMapGenerator without name hashes), so that CI without a kustomize binary still checks the
    objects. Compared with a real rendering whenever one is available."""
    k = load_yaml_docs(kustomization_file(directory))[0]
    unknown = set(k) - READER_KEYS
    if unknown:
        raise Unsupported(", ".join(sorted(unknown)))
    objects: list[dict] = []
    for entry in k.get("resources") or []:
        path = (directory / entry).resolve()
        objects.extend(read_kustomization(path) if path.is_dir() else load_yaml_docs(path))
    for gen in k.get("configMapGenerator") or []:
        if set(gen) - {"name", "files", "literals", "behavior", "options"}:
            raise Unsupported(f"configMapGenerator keys {sorted(set(gen))}")
        data = {}
        for entry in gen.get("files") or []:
            key, path = generator_file_path(entry)
            data[key] = (directory / path).read_text(encoding="utf-8")
        for literal in gen.get("literals") or []:
            key, _, value = literal.partition("=")
            data[key] = value
        labels = (gen.get("options") or {}).get("labels")
        behavior = gen.get("behavior", "create")
        existing = [
            o
            for o in objects
            if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == gen["name"]
        ]
        if behavior == "create":
            cm = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": gen["name"]},
                "data": data,
            }
            if labels:
                cm["metadata"]["labels"] = dict(labels)
            objects.append(cm)
        elif behavior in ("replace", "merge") and len(existing) == 1:
            cm = existing[0]
            cm["data"] = data if behavior == "replace" else {**cm.get("data", {}), **data}
            if labels:
                cm["metadata"].setdefault("labels", {}).update(labels)
        else:
            raise Unsupported(f"configMapGenerator behavior {behavior} for {gen['name']}")
    for image in k.get("images") or []:
        for obj in objects:
            for container in pod_containers(obj):
                name, tag, digest = split_image(container.get("image", ""))
                if name != image["name"]:
                    continue
                name = image.get("newName", name)
                if image.get("digest"):
                    container["image"] = f"{name}@{image['digest']}"
                else:
                    tag = image.get("newTag", tag)
                    at = f"@{digest}" if digest and "newTag" not in image else ""
                    container["image"] = name + (f":{tag}" if tag else "") + at
    if k.get("namespace"):
        for obj in objects:
            if obj.get("kind") == "Namespace":
                obj["metadata"]["name"] = k["namespace"]
            elif obj.get("kind") not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = k["namespace"]
    return objects


def split_image(image: str) -> tuple[str, str, str]:
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = ""
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest


def pod_containers(obj: dict) -> list[dict]:
    spec = pod_spec(obj)
    if spec is None:
        return []
    return list(spec.get("containers") or []) + list(spec.get("initContainers") or [])


def pod_spec(obj: dict) -> dict | None:
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return obj.get("spec", {}).get("template", {}).get("spec")
    if obj.get("kind") == "Pod":
        return obj.get("spec")
    return None


HASHED = re.compile(r"-[a-z0-9]{10}$")


def unhash(objects: list[dict]) -> list[dict]:
    """A rendering with the generated ConfigMap name hashes removed, for comparison."""
    objects = copy.deepcopy(objects)
    hashed = {}
    for obj in objects:
        if obj.get("kind") == "ConfigMap":
            name = obj["metadata"]["name"]
            plain = HASHED.sub("", name)
            hashed[name] = plain
            obj["metadata"]["name"] = plain
    for obj in objects:
        for volume in (pod_spec(obj) or {}).get("volumes") or []:
            if "configMap" in volume and volume["configMap"].get("name") in hashed:
                volume["configMap"]["name"] = hashed[volume["configMap"]["name"]]
    return objects


def first_difference(a, b, path="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{path}.{key} only in {'the rendering' if key in b else 'the reader'}"
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return ""
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return ""
    return "" if a == b else f"{path}: {a!r} vs {b!r}"


def render(renderer: list[str], directory: Path) -> list[dict] | None:
    result = subprocess.run(
        renderer + [str(directory)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    if result.returncode != 0:
        R.fail(
            f"{' '.join(renderer)} {rel(directory)}: exit {result.returncode}: "
            f"{result.stderr.strip()[-800:]}"
        )
        return None
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]
    R.ok(
        f"{' '.join(renderer)} {rel(directory)}: {len(objects)} objects "
        f"({', '.join(describe(o) for o in objects)})"
    )
    return objects


# ---------------------------------------------------------------------------------------------
# Objects: schemas, shapes, labels


def check_schemas(objects: list[dict], versions: list[str], where: str) -> None:
    for obj in objects:
        api_kind = (obj.get("apiVersion"), obj.get("kind"))
        if api_kind in SHAPE_CHECKED:
            if obj.get("kind") == "PrometheusRule":
                check_prometheus_rule_shape(obj, where)
            else:
                check_service_monitor_shape(obj, where)
            continue
        errors = []
        for version in versions:
            try:
                schema_validate(obj, version, strict=True)
            except ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "(top)"
                errors.append(f"Kubernetes {e.version}: {path}: {e.message}")
            except SchemaNotFoundError as e:
                errors.append(f"{e.message} (a CRD? add a shape check to deploy/validate.py)")
                break
        R.check(
            not errors,
            f"{where}: {describe(obj)} matches the Kubernetes "
            f"{'/'.join(versions)} schemas (strict)",
            "; ".join(errors),
        )


def check_prometheus_rule_shape(obj: dict, where: str) -> None:
    """The PrometheusRule CRD's shape; the expressions themselves are checked by promtool and a
    real Prometheus in tests/prometheus.rs."""
    problems = []
    if not (obj.get("metadata") or {}).get("name"):
        problems.append("metadata.name missing")
    groups = (obj.get("spec") or {}).get("groups")
    if not groups or not isinstance(groups, list):
        problems.append("spec.groups missing or empty")
    for i, group in enumerate(groups or []):
        if not isinstance(group, dict) or not group.get("name"):
            problems.append(f"spec.groups[{i}].name missing")
            continue
        for j, rule in enumerate(group.get("rules") or []):
            at = f"spec.groups[{i}].rules[{j}]"
            if not isinstance(rule, dict) or not isinstance(rule.get("expr"), str):
                problems.append(f"{at}.expr missing")
            elif bool(rule.get("alert")) == bool(rule.get("record")):
                problems.append(f"{at}: exactly one of alert and record")
            elif rule.get("for") and not re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", str(rule["for"])):
                problems.append(f"{at}.for {rule['for']!r} is not a Prometheus duration")
    R.check(
        not problems,
        f"{where}: {describe(obj)} has the PrometheusRule shape (metadata.name, "
        "spec.groups[].name, rules[].alert|record, expr, for)",
        "; ".join(problems),
    )


def check_service_monitor_shape(obj: dict, where: str) -> None:
    problems = []
    if not (obj.get("metadata") or {}).get("name"):
        problems.append("metadata.name missing")
    spec = obj.get("spec") or {}
    endpoints = spec.get("endpoints") or []
    if not endpoints or not isinstance(endpoints, list):
        problems.append("spec.endpoints missing or empty")
    else:
        for i, endpoint in enumerate(endpoints):
            if not isinstance(endpoint, dict) or not endpoint.get("port"):
                problems.append(f"spec.endpoints[{i}].port missing")
            elif endpoint.get("interval") and not re.fullmatch(
                r"([0-9]+(ms|s|m|h))+", str(endpoint["interval"])
            ):
                problems.append(
                    f"spec.endpoints[{i}].interval {endpoint['interval']!r} is not "
                    "a Prometheus duration"
                )
    if not (spec.get("selector") or {}).get("matchLabels"):
        problems.append("spec.selector.matchLabels missing")
    R.check(
        not problems,
        f"{where}: {describe(obj)} has the ServiceMonitor shape (apiVersion, "
        "kind, metadata.name, spec.selector, spec.endpoints[].port)",
        "; ".join(problems),
    )


def check_labels(objects: list[dict], where: str) -> None:
    unlabelled = [
        describe(o)
        for o in objects
        if (o.get("metadata", {}).get("labels") or {}).get(APP_LABEL[0]) != APP_LABEL[1]
    ]
    R.check(
        not unlabelled,
        f"{where}: every object is labelled {APP_LABEL[0]}={APP_LABEL[1]}",
        f"missing on {', '.join(unlabelled)}",
    )


# ---------------------------------------------------------------------------------------------
# The Deployment's wiring, restricted-v2, and the mirrorgate configuration it mounts


K8S_UNITS = {
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "": 1,
}
MG_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def k8s_bytes(quantity) -> int | None:
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity).strip())
    if not m or m.group(2) not in K8S_UNITS:
        return None
    return int(float(m.group(1)) * K8S_UNITS[m.group(2)])


def mg_bytes(size) -> int | None:
    m = re.fullmatch(r"([0-9]+)\s*([A-Za-z]*)", str(size).strip())
    if not m or m.group(2) not in MG_UNITS:
        return None
    return int(m.group(1)) * MG_UNITS[m.group(2)]


def selects(selector: dict | None, labels: dict | None) -> bool:
    selector = selector or {}
    labels = labels or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def under(path: str, mount: str) -> str | None:
    """The part of `path` inside `mount` ('' for the mount itself), or None."""
    p, m = PurePosixPath(path), PurePosixPath(mount)
    if p == m:
        return ""
    try:
        return str(p.relative_to(m))
    except ValueError:
        return None


class Pod:
    """The Deployment's container, its mounts and volumes, for looking paths up."""

    def __init__(self, deployment: dict) -> None:
        self.spec = deployment["spec"]["template"]["spec"]
        self.container = self.spec["containers"][0]
        self.volumes = {v["name"]: v for v in self.spec.get("volumes") or []}
        self.mounts = self.container.get("volumeMounts") or []
        self.ports = {p.get("name"): p for p in self.container.get("ports") or []}

    def mount_for(self, path: str) -> tuple[dict, dict, str] | None:
        """The innermost mount holding `path`: (mount, volume, path inside the volume)."""
        best = None
        for mount in self.mounts:
            inside = under(path, mount["mountPath"])
            if inside is not None and (
                best is None or len(mount["mountPath"]) > len(best[0]["mountPath"])
            ):
                best = (mount, self.volumes.get(mount["name"], {}), inside)
        return best


def check_deployment(objects: list[dict], where: str) -> tuple[Pod, dict] | None:
    deployments = [o for o in objects if o.get("kind") == "Deployment"]
    if not R.check(len(deployments) == 1, f"{where}: one Deployment", f"found {len(deployments)}"):
        return None
    deployment = deployments[0]
    name = describe(deployment)
    pod = Pod(deployment)
    spec, container = pod.spec, pod.container
    template_labels = deployment["spec"]["template"]["metadata"].get("labels")
    R.check(
        selects(deployment["spec"]["selector"].get("matchLabels"), template_labels),
        f"{where}: {name} selector matches its pod labels",
    )

    # Restricted-v2 SCC / restricted Pod Security Standard.
    problems = []
    psc = spec.get("securityContext") or {}
    for c in pod_containers(deployment):
        csc = c.get("securityContext") or {}
        label = f"container {c['name']}"
        if "runAsUser" in psc or "runAsUser" in csc:
            problems.append(f"{label}: runAsUser is set (restricted-v2 assigns the UID)")
        if not (csc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            problems.append(f"{label}: runAsNonRoot is not true")
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{label}: allowPrivilegeEscalation is not false")
        if csc.get("privileged"):
            problems.append(f"{label}: privileged")
        caps = csc.get("capabilities") or {}
        if caps.get("drop") != ["ALL"]:
            problems.append(f"{label}: capabilities.drop is not [ALL]")
        if caps.get("add"):
            problems.append(f"{label}: capabilities.add {caps['add']}")
        seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            problems.append(f"{label}: seccompProfile.type is {seccomp!r}, not RuntimeDefault")
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{label}: readOnlyRootFilesystem is not true")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            problems.append(f"{label}: hostPort")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"{key}: true")
    for key in ("fsGroup", "supplementalGroups", "runAsGroup"):
        if key in psc:
            problems.append(f"securityContext.{key} is fixed (restricted-v2 assigns it)")
    for volume in pod.volumes.values():
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']}: {', '.join(kinds)} is not allowed")
    R.check(
        not problems,
        f"{where}: {name} runs under restricted-v2 (no fixed UID, non-root, no "
        "privilege escalation, no capabilities, RuntimeDefault seccomp, read-only root)",
        "; ".join(problems),
    )

    # Mounts, volumes and the objects they name.
    problems = []
    present = {(o.get("kind"), o["metadata"]["name"]) for o in objects}
    for mount in pod.mounts:
        if mount["name"] not in pod.volumes:
            problems.append(f"mount {mount['mountPath']} names no volume {mount['name']}")
    for volume in pod.volumes.values():
        for kind, ref, key in (
            ("ConfigMap", "configMap", "name"),
            ("Secret", "secret", "secretName"),
        ):
            if ref in volume:
                target = volume[ref].get(key)
                if (kind, target) not in present and not volume[ref].get("optional"):
                    problems.append(
                        f"volume {volume['name']}: {kind} {target} is not in the "
                        "kustomization and the volume is not optional"
                    )
    writable = [
        m["mountPath"]
        for m in pod.mounts
        if not m.get("readOnly")
        and not {"emptyDir", "persistentVolumeClaim", "ephemeral"}
        & set(pod.volumes.get(m["name"], {}))
    ]
    if writable:
        problems.append(f"mounts {writable} are not readOnly")
    R.check(
        not problems,
        f"{where}: {name} mounts name its volumes, and its ConfigMap/Secret "
        "volumes name objects of the kustomization (or are optional)",
        "; ".join(problems),
    )

    # Services, PDB, anti-affinity, ServiceMonitor select these pods.
    for obj in objects:
        kind = obj.get("kind")
        if kind == "Service":
            R.check(
                selects(obj["spec"].get("selector"), template_labels),
                f"{where}: {describe(obj)} selects the pods",
            )
            bad = [
                p
                for p in obj["spec"].get("ports") or []
                if isinstance(p.get("targetPort"), str) and p["targetPort"] not in pod.ports
            ]
            R.check(
                not bad,
                f"{where}: {describe(obj)} target ports are container ports",
                f"unknown {[p['targetPort'] for p in bad]}",
            )
        elif kind == "PodDisruptionBudget":
            R.check(
                selects(obj["spec"]["selector"].get("matchLabels"), template_labels),
                f"{where}: {describe(obj)} selects the pods",
            )
            R.check(
                obj["spec"].get("minAvailable", 0) < deployment["spec"].get("replicas", 1)
                or "maxUnavailable" in obj["spec"],
                f"{where}: {describe(obj)} leaves a pod evictable "
                f"(minAvailable < replicas {deployment['spec'].get('replicas', 1)})",
            )
        elif kind == "ServiceMonitor":
            services = [
                o
                for o in objects
                if o.get("kind") == "Service"
                and selects(obj["spec"]["selector"].get("matchLabels"), o["metadata"].get("labels"))
            ]
            if R.check(
                len(services) >= 1,
                f"{where}: {describe(obj)} selects a Service",
                "no Service has its matchLabels",
            ):
                names = {p.get("name") for s in services for p in s["spec"].get("ports") or []}
                bad = [
                    e.get("port") for e in obj["spec"]["endpoints"] if e.get("port") not in names
                ]
                R.check(
                    not bad,
                    f"{where}: {describe(obj)} scrapes named Service ports",
                    f"no Service port named {bad}",
                )
    check_rbac(objects, deployment, where)
    anti = ((spec.get("affinity") or {}).get("podAntiAffinity") or {}).get(
        "preferredDuringSchedulingIgnoredDuringExecution"
    ) or []
    R.check(
        all(
            selects(t["podAffinityTerm"]["labelSelector"].get("matchLabels"), template_labels)
            for t in anti
        )
        and bool(anti),
        f"{where}: {name} pod anti-affinity selects its own pods",
    )

    # Probes and graceful stop.
    for probe in ("livenessProbe", "readinessProbe"):
        get = (container.get(probe) or {}).get("httpGet") or {}
        R.check(
            get.get("port") in pod.ports
            or get.get("port") in [p.get("containerPort") for p in pod.ports.values()],
            f"{where}: {name} {probe} GET {get.get('path')} on a container port",
        )
    pre_stop = (container.get("lifecycle") or {}).get("preStop") or {}
    pause = 0
    if pre_stop.get("sleep"):
        pause = int(pre_stop["sleep"].get("seconds", 0))
    elif pre_stop.get("exec"):
        command = pre_stop["exec"].get("command") or []
        if len(command) == 2 and command[0] == "sleep" and command[1].isdigit():
            pause = int(command[1])
    grace = spec.get("terminationGracePeriodSeconds", 30)
    R.check(
        grace > pause + MIRRORGATE_GRACE_SECONDS,
        f"{where}: {name} terminationGracePeriodSeconds {grace} > preStop {pause}s + "
        f"mirrorgate's {MIRRORGATE_GRACE_SECONDS}s drain",
    )
    return pod, deployment


def check_rbac(objects: list[dict], deployment: dict, where: str) -> None:
    """The Deployment's ServiceAccount exists and is bound to a ClusterRole that grants read
    access (get, list, watch) to exactly the resources the `kubernetes:` rule source reads."""
    name = describe(deployment)
    account = deployment["spec"]["template"]["spec"].get("serviceAccountName")
    namespace = deployment["metadata"].get("namespace")
    if not R.check(
        any(
            o.get("kind") == "ServiceAccount" and o["metadata"]["name"] == account
            for o in objects
        ),
        f"{where}: {name} runs as a ServiceAccount of the kustomization",
        f"serviceAccountName {account!r} names none",
    ):
        return
    roles = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "ClusterRole"}
    bound = [
        roles.get(b["roleRef"]["name"])
        for b in objects
        if b.get("kind") == "ClusterRoleBinding"
        and b["roleRef"].get("kind") == "ClusterRole"
        and any(
            s.get("kind") == "ServiceAccount"
            and s.get("name") == account
            and s.get("namespace") == namespace
            for s in b.get("subjects") or []
        )
    ]
    if not R.check(
        len(bound) == 1 and bound[0] is not None,
        f"{where}: one ClusterRoleBinding binds a ClusterRole of the kustomization to "
        f"ServiceAccount {namespace}/{account}",
        f"found {len(bound)}",
    ):
        return
    granted, problems = set(), []
    for rule in bound[0].get("rules") or []:
        verbs = set(rule.get("verbs") or [])
        if verbs != READ_VERBS:
            problems.append(f"verbs {sorted(verbs)} on {rule.get('resources')}")
        if rule.get("resourceNames") or rule.get("nonResourceURLs"):
            problems.append(f"unexpected rule {rule}")
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                granted.add((group, resource))
    if granted != MIRROR_RULE_RESOURCES:
        missing = sorted(MIRROR_RULE_RESOURCES - granted)
        extra = sorted(granted - MIRROR_RULE_RESOURCES)
        problems.append(f"missing {missing}, extra {extra}")
    R.check(
        not problems,
        f"{where}: {describe(bound[0])} grants get/list/watch on exactly the resources the "
        "kubernetes rule source reads",
        "; ".join(problems),
    )


def check_config(
    objects: list[dict], pod: Pod, deployment: dict, where: str, mirrorgate: str, tmp: Path
) -> None:
    """The mirrorgate configuration the Deployment runs with: its paths and ports against the
    pod, then `mirrorgate check` and a short `mirrorgate serve` on it."""
    name = describe(deployment)
    args = pod.container.get("args") or []
    if not R.check(
        len(args) == 3 and args[:2] == ["serve", "--config"],
        f"{where}: {name} runs `serve --config FILE`",
        f"args are {args}",
    ):
        return
    config_path = args[2]
    found = pod.mount_for(config_path)
    configmaps = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "ConfigMap"}
    cm = configmaps.get(((found or ({}, {}, ""))[1].get("configMap") or {}).get("name"))
    if not R.check(
        cm is not None and found[2] in (cm.get("data") or {}),
        f"{where}: {config_path} is a key of a ConfigMap in the kustomization",
        f"mount: {found and found[0]['mountPath']}",
    ):
        return
    text = cm["data"][found[2]]
    cm_where = f"{where}: ConfigMap {cm['metadata']['name']} {found[2]}"
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        R.fail(f"{cm_where}: not YAML: {e}")
        return
    if not R.check(isinstance(config, dict), f"{cm_where}: a YAML mapping"):
        return

    # kubernetes: the rule source reads the API as the pod's ServiceAccount, whose token is mounted
    # only where it is used.
    spec = deployment["spec"]["template"]["spec"]
    token = spec.get("automountServiceAccountToken", True)
    if config.get("kubernetes") is not None:
        section = config["kubernetes"] or {}
        R.check(
            token is True and section.get("kubeconfig") is None,
            f"{cm_where}: the kubernetes rule source reads the API as ServiceAccount "
            f"{spec.get('serviceAccountName')} (its token mounted, kubeconfig null)",
            f"automountServiceAccountToken {token}, kubeconfig {section.get('kubeconfig')!r}",
        )
        # `check` and `serve` below run without a cluster: the rule files alone.
        config = {k: v for k, v in config.items() if k != "kubernetes"}
        text = yaml.safe_dump(config, sort_keys=False)
    else:
        R.check(
            token is False,
            f"{cm_where}: no kubernetes section, so no ServiceAccount token mounted",
            f"automountServiceAccountToken {token}",
        )

    # listen: all interfaces, on the container port the Service and probes use.
    listen = str(config.get("listen", "127.0.0.1:5000"))
    host, _, port = listen.rpartition(":")
    registry_port = (pod.ports.get("registry") or {}).get("containerPort")
    R.check(
        host in ("0.0.0.0", "[::]") and port.isdigit() and int(port) == registry_port,
        f"{cm_where}: listen {listen} is the container port {registry_port} on all interfaces",
        "the kubelet, the Service and Prometheus reach the pod on its IP",
    )
    metrics_port = int(port) if port.isdigit() else None
    if config.get("metrics_listen"):
        metrics_port = int(str(config["metrics_listen"]).rpartition(":")[2])
    scraped = []
    for sm in (o for o in objects if o.get("kind") == "ServiceMonitor"):
        for endpoint in sm["spec"]["endpoints"]:
            for svc in (o for o in objects if o.get("kind") == "Service"):
                for p in svc["spec"].get("ports") or []:
                    if p.get("name") == endpoint.get("port"):
                        target = p.get("targetPort", p.get("port"))
                        scraped.append(pod.ports.get(target, {}).get("containerPort", target))
    if scraped:
        R.check(
            all(s == metrics_port for s in scraped),
            f"{cm_where}: the ServiceMonitor scrapes the port serving /metrics ({metrics_port})",
            f"it scrapes {scraped}",
        )

    # rules: mounted ConfigMaps; they are laid out below as the kubelet does.
    rules_dirs = []
    rules = config.get("rules", ["config/rules"])
    for path in rules if isinstance(rules, list) else [rules]:
        found = pod.mount_for(str(path))
        volume = (found or ({}, {}, ""))[1]
        rules_cm = configmaps.get((volume.get("configMap") or {}).get("name"))
        if R.check(
            rules_cm is not None and found[2] == "",
            f"{cm_where}: rules {path} is the mount of a ConfigMap in the kustomization",
        ):
            rules_dirs.append(configmap_volume(rules_cm, tmp / f"rules-{len(rules_dirs)}"))

    # cache.dir: a writable volume, larger than cache.max_size; memory limit above cache.memory.
    cache = config.get("cache") or {}
    cache_dir = str(cache.get("dir", "var/cache"))
    found = pod.mount_for(cache_dir)
    volume = (found or ({}, {}, ""))[1]
    R.check(
        found is not None
        and not found[0].get("readOnly")
        and bool({"emptyDir", "persistentVolumeClaim", "ephemeral"} & set(volume)),
        f"{cm_where}: cache.dir {cache_dir} is on a writable volume (the root filesystem is "
        "read-only)",
    )
    max_size = mg_bytes(cache.get("max_size", "10GiB"))
    limit = k8s_bytes((volume.get("emptyDir") or {}).get("sizeLimit", "")) if volume else None
    if "emptyDir" in volume:
        R.check(
            limit is not None and max_size is not None and max_size < limit,
            f"{cm_where}: cache.max_size {cache.get('max_size')} < emptyDir sizeLimit "
            f"{volume['emptyDir'].get('sizeLimit')}",
        )
    memory = mg_bytes(cache.get("memory", "256MiB"))
    mem_limit = k8s_bytes(
        ((pod.container.get("resources") or {}).get("limits") or {}).get("memory", "")
    )
    R.check(
        memory is not None and mem_limit is not None and memory + PROCESS_OVERHEAD <= mem_limit,
        f"{cm_where}: memory limit {mem_limit and mem_limit >> 20}Mi >= cache.memory "
        f"{cache.get('memory', '256MiB')} + 64 MiB",
    )

    # pull_secret: a file of a Secret volume.
    pull_secret = config.get("pull_secret")
    if pull_secret:
        found = pod.mount_for(str(pull_secret))
        volume = (found or ({}, {}, ""))[1]
        ok = R.check(
            found is not None and "secret" in volume and found[2] != "",
            f"{cm_where}: pull_secret {pull_secret} is a key of a Secret volume",
        )
        if ok and volume["secret"].get("optional"):
            print(
                f"        note: mirrorgate does not start without {pull_secret}; the Secret "
                f"{volume['secret']['secretName']} must exist (the volume is optional, "
                "mirrorgate is not)"
            )
    else:
        R.ok(
            f"{cm_where}: pull_secret is off (mirrorgate would not start while the optional "
            "Secret is missing)"
        )

    # mirrorgate itself: the exact text, with the rules laid out as the mounted volume.
    if len(rules_dirs) != len(rules if isinstance(rules, list) else [rules]):
        R.skip(f"{cm_where}: `mirrorgate check` and `serve` not tried (rules not mounted)")
        return
    config_file = tmp / "config" / PurePosixPath(config_path).name
    config_file.parent.mkdir(parents=True, exist_ok=True)
    if config.get("pull_secret"):
        # `check` reads the pull secret; the Secret's file stands in as an empty one.
        secret = tmp / "check-pull-secret.json"
        secret.write_text('{"auths": {}}\n', encoding="utf-8")
        text = text.replace(str(config["pull_secret"]), str(secret))
    config_file.write_text(text, encoding="utf-8")
    # --offline: the configuration is meant for the cluster, whose shared-cache bucket (and its
    # credentials) is not reachable from here.
    command = [mirrorgate, "check", "--offline", "--config", str(config_file)]
    for directory in rules_dirs:
        command += ["--rules", str(directory)]
    result = subprocess.run(
        command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60
    )
    summary = ", ".join(
        line
        for line in result.stdout.splitlines()
        if re.match(r"^(files|objects|scopes|blocked scopes|self mirrors|warnings): ", line)
    )
    R.check(
        result.returncode == 0,
        f"{cm_where}: `mirrorgate check` accepts it with the rules ConfigMap mounted ({summary})",
        (result.stderr.strip() or result.stdout.strip())[-1500:],
    )
    if result.returncode != 0:
        R.skip(f"{cm_where}: `mirrorgate serve` not tried (check failed)")
        return
    if not re.search(r"^warnings: 0$", result.stdout, re.M):
        R.fail(f"{cm_where}: the rules have warnings:\n{result.stdout}")

    serve_smoke_test(config, config_path, rules_dirs, cm_where, mirrorgate, tmp)


def configmap_volume(cm: dict, directory: Path) -> Path:
    """Lays out a ConfigMap as the kubelet mounts it: the keys in a timestamped directory, `..data`
    pointing at it, and one symlink per key through `..data`."""
    stamp = "..2026_01_01_00_00_00.000000001"
    (directory / stamp).mkdir(parents=True)
    for key, value in (cm.get("data") or {}).items():
        (directory / stamp / key).write_text(value, encoding="utf-8")
    os.symlink(stamp, directory / "..data")
    for key in cm.get("data") or {}:
        os.symlink(f"..data/{key}", directory / key)
    return directory


def serve_smoke_test(
    config: dict, config_path: str, rules_dirs: list[Path], where: str, mirrorgate: str, tmp: Path
) -> None:
    """`mirrorgate serve` starts with the configuration (paths moved into `tmp`, listening on a
    free loopback port), answers the probes and /v2/, and stops cleanly on SIGTERM."""
    config = copy.deepcopy(config)
    config["listen"] = "127.0.0.1:0"
    if config.get("metrics_listen"):
        config["metrics_listen"] = "127.0.0.1:0"
    config["rules"] = [str(d) for d in rules_dirs]
    config.setdefault("cache", {})
    config["cache"] = dict(config["cache"] or {}, dir=str(tmp / "cache"))
    if config.get("pull_secret"):
        secret = tmp / "pull-secret" / PurePosixPath(str(config["pull_secret"])).name
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_text('{"auths": {}}\n', encoding="utf-8")
        config["pull_secret"] = str(secret)
    if any((r or {}).get("ca_file") for r in (config.get("registries") or {}).values()):
        R.skip(f"{where}: `mirrorgate serve` not tried: a registry has a ca_file")
        return
    served = tmp / "serve.json"  # JSON is YAML: the values as parsed, with the paths moved
    served.write_text(json.dumps(config, indent=2), encoding="utf-8")

    env = dict(os.environ, RUST_LOG="info")
    proc = subprocess.Popen(
        [mirrorgate, "serve", "--config", str(served)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # stderr to a queue, so that waiting for a line can time out
        for line in proc.stderr:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    log: list[str] = []
    address = None
    try:
        deadline = time.monotonic() + 20
        while address is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:  # exited
                break
            log.append(line)
            m = re.search(r"\bserving\b.*\blisten=(\S+)", line)
            if m:
                address = m.group(1)
        if not R.check(
            address is not None,
            f"{where}: `mirrorgate serve` starts with it (as {config_path})",
            "\n" + "\n".join(log[-15:]),
        ):
            return
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        answers = {}
        for path in ("/healthz", "/readyz", "/v2/"):
            try:
                with opener.open(f"http://{address}{path}", timeout=5) as response:
                    answers[path] = response.status
            except Exception as e:  # noqa: BLE001 - any failure is the answer
                answers[path] = str(e)
        R.check(
            all(status == 200 for status in answers.values()),
            f"{where}: the running proxy answers GET /healthz, /readyz and /v2/ with 200",
            str(answers),
        )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=MIRRORGATE_GRACE_SECONDS + 5)
                R.check(
                    code == 0,
                    f"{where}: `mirrorgate serve` stops cleanly on SIGTERM",
                    f"exit status {code}",
                )
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                R.fail(f"{where}: `mirrorgate serve` did not stop on SIGTERM")


def component_needs(name: str, config: dict) -> tuple[str, str] | None:
    """What an overlay's mirrorgate.yaml must hold for a component of deploy/kubernetes/components:
    (what is needed, what is missing), or None when it is there or the component is not one of
    ours. mirrorgate reads one configuration file, so a component adds objects, mounts and rule
    files but cannot add its section to that file: the overlay has to, and forgetting would deploy
    the component's mounts with nothing using them."""
    shared = ((config.get("cache") or {}).get("shared")) or {}
    services = ("mirrorgate.mirrorgate.svc", "mirrorgate.mirrorgate.svc.cluster.local")
    if name == "cluster-rules":
        if config.get("kubernetes") is None:
            return "a `kubernetes:` section", "none"
    elif name == "shared-cache":
        if not (shared.get("s3") and shared.get("key_file")):
            return "`cache.shared` with `s3` and `key_file`", f"cache.shared is {shared or None}"
    elif name == "management-cluster":
        names = [n for n in config.get("self_names") or [] if n.rsplit(":", 1)[0] not in services]
        if not names or not config.get("via_token"):
            return (
                "`self_names` with the address the cluster's mirror sets use (besides the "
                "Service's names) and a `via_token`",
                f"self_names {config.get('self_names')}, via_token {config.get('via_token')!r}",
            )
    return None


def components_of(directory: Path) -> list[Path]:
    k = load_yaml_docs(kustomization_file(directory))[0]
    return [(directory / c).resolve() for c in k.get("components") or []]


def check_component_sections(directory: Path, objects: list[dict], where: str) -> None:
    used = [c for c in components_of(directory) if c.parent == COMPONENTS.resolve()]
    if not used:
        return
    configs = [
        o["data"]["mirrorgate.yaml"]
        for o in objects
        if o.get("kind") == "ConfigMap"
        and o["metadata"]["name"].startswith("mirrorgate-config")
        and "mirrorgate.yaml" in (o.get("data") or {})
    ]
    if not R.check(len(configs) == 1, f"{where}: one mirrorgate-config ConfigMap"):
        return
    config = yaml.safe_load(configs[0]) or {}
    for component in used:
        need = component_needs(component.name, config)
        R.check(
            need is None,
            f"{where}: mirrorgate.yaml has what component {component.name} needs",
            need and f"it needs {need[0]}; found {need[1]}",
        )


def check_component(directory: Path, args, tmp: Path) -> None:
    """A Kustomize Component cannot be built alone: it is rendered on top of the base (in a
    kustomization of its own in tmp), and the objects checked like an overlay's. Its configuration
    section comes from the overlay using it, so `mirrorgate check` runs there (each component must
    be used by one overlay at least)."""
    where = rel(directory)
    R.section(where)
    check_kustomization_files(directory)
    k = load_yaml_docs(kustomization_file(directory))[0]
    R.check(
        k.get("apiVersion") == COMPONENT_API and k.get("kind") == "Component",
        f"{where}: apiVersion {COMPONENT_API}, kind Component",
        f"apiVersion {k.get('apiVersion')}, kind {k.get('kind')}",
    )
    users = [
        rel(overlay)
        for overlay in sorted(KUSTOMIZATIONS.glob("overlays/*"))
        if kustomization_file(overlay)
        and directory.resolve() in components_of(overlay)
    ]
    R.check(
        bool(users),
        f"{where}: used by {', '.join(users) or 'no overlay'} (where its configuration is checked)",
        "add it to an overlay in deploy/kubernetes/overlays, so that `mirrorgate check` runs on a "
        "configuration made for it",
    )
    if not args.renderer:
        R.skip(f"{where}: not rendered on the base (no kustomize or kubectl binary)")
        return
    work = tmp / ("component-" + directory.name)
    work.mkdir(parents=True, exist_ok=True)
    (work / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(BASE, work)],
                "components": [os.path.relpath(directory, work)],
            }
        ),
        encoding="utf-8",
    )
    objects = render(args.renderer, work)
    if objects is None:
        return
    where = f"{where} (on the base)"
    check_schemas(objects, args.versions, where)
    check_labels(objects, where)
    check_deployment(objects, where)


def check_kustomization(directory: Path, args, tmp: Path) -> None:
    where = rel(directory)
    if load_yaml_docs(kustomization_file(directory))[0].get("kind") == "Component":
        check_component(directory, args, tmp)
        return
    R.section(f"{where}")
    check_kustomization_files(directory)
    read_error = None
    try:
        read = read_kustomization(directory)
    except Unsupported as e:
        read = None
        R.skip(f"{where}: the built-in reader does not handle {e}; checked from the rendering only")
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, IndexError) as e:
        read, read_error = None, e
        R.fail(f"{where}: cannot read the kustomization and its files: {type(e).__name__}: {e}")
    rendered = render(args.renderer, directory) if args.renderer else None
    if rendered is None and not args.renderer:
        R.skip(
            f"{where}: not rendered (no kustomize or kubectl binary, or KUSTOMIZE=none; "
            "checked with the built-in reader)"
        )
    if read is not None and rendered is not None:
        difference = first_difference(
            sorted(read, key=describe), sorted(unhash(rendered), key=describe)
        )
        R.check(
            not difference,
            f"{where}: the built-in reader gives what kustomize renders (generated names aside)",
            difference,
        )
    objects = rendered if rendered is not None else read
    if objects is None:
        if not args.renderer and read_error is None and directory.name != "base":
            # An overlay using more of Kustomize than the reader knows, and nothing to render it.
            R.skip(f"{where}: objects not checked (install kustomize or kubectl to render it)")
        else:
            # The base must stay checkable on any machine: keep it to what the reader knows.
            R.fail(f"{where}: nothing left to check (neither read nor rendered)")
        return
    check_schemas(objects, args.versions, where)
    check_labels(objects, where)
    check_component_sections(directory, objects, where)
    found = check_deployment(objects, where)
    if found:
        pod, deployment = found
        work = tmp / re.sub(r"[^A-Za-z0-9]+", "-", where)
        check_config(objects, pod, deployment, where, args.mirrorgate, work)
        args.deployments.append((where, deployment))


# ---------------------------------------------------------------------------------------------
# Node-side files and the Containerfile


def check_nodes() -> set[str]:
    R.section(rel(NODES))
    files = sorted(p for p in NODES.rglob("*") if p.suffix in (".conf", ".toml"))
    if not R.check(bool(files), f"{rel(NODES)} holds registries.conf.d and hosts.toml examples"):
        return set()
    via_crio, via_containerd = set(), set()
    for path in files:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            R.fail(f"{rel(path)}: not valid TOML: {e}")
            continue
        R.ok(f"{rel(path)}: valid TOML")
        if path.parent.name == "registries.conf.d":
            problems = []
            for entry in doc.get("registry") or []:
                location = entry.get("location") or entry.get("prefix")
                unknown = set(entry) - {
                    "prefix",
                    "location",
                    "insecure",
                    "blocked",
                    "mirror",
                    "mirror-by-digest-only",
                }
                if unknown:
                    problems.append(f"[[registry]] {location}: unknown keys {sorted(unknown)}")
                for mirror in entry.get("mirror") or []:
                    unknown = set(mirror) - {"location", "insecure", "pull-from-mirror"}
                    if unknown:
                        problems.append(f"mirror of {location}: unknown keys {sorted(unknown)}")
                    m = re.fullmatch(r"([^/]+)/(.+)", mirror.get("location", ""))
                    if not m or m.group(2) != location:
                        problems.append(
                            f"mirror {mirror.get('location')} of {location} is not "
                            f"<proxy host:port>/{location} (path-prefix addressing)"
                        )
                    if mirror.get("insecure") is not True:
                        problems.append(
                            f"mirror {mirror.get('location')}: insecure = true is "
                            "needed while mirrorgate serves plain HTTP"
                        )
                via_crio.add(location)
            R.check(
                bool(via_crio) and not problems,
                f"{rel(path)}: [[registry]] entries for "
                f"{', '.join(sorted(via_crio))} with mirrorgate path-prefix mirrors",
                "; ".join(problems),
            )
        elif path.name == "hosts.toml":
            registry = path.parent.name
            server = (
                "https://registry-1.docker.io" if registry == "docker.io" else f"https://{registry}"
            )
            problems = []
            if doc.get("server") != server:
                problems.append(f"server is {doc.get('server')!r}, not {server!r}")
            hosts = doc.get("host") or {}
            if not hosts:
                problems.append('no [host."..."] table')
            for url, host in hosts.items():
                caps = set(host.get("capabilities") or [])
                if not re.fullmatch(r"https?://[^/]+", url):
                    problems.append(
                        f"host {url} is not scheme://host[:port] (containerd adds "
                        "/v2 and ?ns= itself)"
                    )
                if caps != {"pull", "resolve"}:
                    problems.append(
                        f"host {url}: capabilities {sorted(caps)}, not pull + resolve "
                        "(mirrorgate is read-only)"
                    )
            R.check(
                not problems,
                f"{rel(path)}: containerd mirror for {registry} (server, host URL, pull/resolve)",
                "; ".join(problems),
            )
            via_containerd.add(registry)
    R.check(
        via_crio == via_containerd,
        "the CRI-O and containerd examples cover the same "
        f"registries ({', '.join(sorted(via_crio))})",
        f"CRI-O: {sorted(via_crio)}, containerd: {sorted(via_containerd)}",
    )
    return via_crio


def containerfile_instructions() -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in CONTAINERFILE.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        lines.append((word.upper(), rest.strip()))
        current = ""
    return lines


def check_containerfile(deployments: list[tuple[str, dict]]) -> None:
    R.section(rel(CONTAINERFILE))
    instructions = containerfile_instructions()
    # Base images may be build arguments (so that a disconnected site names its mirrored copies):
    # what is checked is each argument's default, the image a plain build uses.
    defaults = {}
    for word, rest in instructions:
        if word == "ARG":
            name, _, value = rest.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    froms = [
        re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults.get(m[1] or m[2], m[0]), rest.split()[0])
        for word, rest in instructions
        if word == "FROM"
    ]
    R.check(
        len(froms) >= 2
        and all(
            "$" not in f and re.search(r":[\w.-]+$|@sha256:", f) and not f.endswith(":latest")
            for f in froms
        ),
        f"multi-stage, base images (or their build arguments' defaults) pinned to a tag or digest "
        f"({', '.join(froms)})",
    )
    problems = []
    destinations = {}
    for word, rest in instructions:
        if word not in ("COPY", "ADD"):
            continue
        parts = [p for p in rest.split() if not p.startswith("--")]
        if any(p.startswith("--from") for p in rest.split()):
            continue
        *sources, destination = parts
        for source in sources:
            if not (ROOT / source).exists():
                problems.append(f"{source} does not exist")
            destinations[destination] = source
    R.check(
        not problems,
        "COPY sources exist in the build context (the repository root)",
        "; ".join(problems),
    )
    # The last stage's settings.
    last = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    final = {word: rest for word, rest in instructions[last:]}
    user = final.get("USER", "0")
    R.check(
        user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0,
        f"USER {user} is numeric and not root (runAsNonRoot can verify it)",
    )
    try:
        entrypoint = json.loads(final.get("ENTRYPOINT", "null"))
        cmd = json.loads(final.get("CMD", "null"))
    except json.JSONDecodeError as e:
        R.fail(f"ENTRYPOINT/CMD are not JSON arrays: {e}")
        return
    R.check(entrypoint == ["mirrorgate"], f"ENTRYPOINT {json.dumps(entrypoint)}")
    for where, deployment in deployments:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        R.check(
            container.get("args") == cmd and "command" not in container,
            f"CMD {json.dumps(cmd)} is what {where} runs",
            f"it runs {json.dumps(container.get('args'))}",
        )
        ports = {str(p["containerPort"]) for p in container.get("ports") or []}
        exposed = set(final.get("EXPOSE", "").replace("/tcp", "").split())
        R.check(ports <= exposed, f"EXPOSE {' '.join(sorted(exposed))} covers {where}'s ports")
    if cmd and "--config" in cmd:
        config = cmd[cmd.index("--config") + 1]
        R.check(
            config in destinations,
            f"the image has a default {config} (COPY {destinations.get(config, '?')})",
            "the image alone would not start",
        )


def guarded(where: str, check, *args) -> None:
    """Runs one group of checks; a file shaped unlike anything expected fails that group, with
    the trace, instead of stopping the others."""
    try:
        check(*args)
    except Exception:  # noqa: BLE001 - reported as a failure
        R.fail(f"{where}: could not be checked:\n{traceback.format_exc()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mirrorgate", required=True)
    parser.add_argument("--k8s-versions", default="1.30 1.33")
    parser.add_argument("renderer", nargs="*")
    args = parser.parse_args()
    args.versions = args.k8s_versions.split()
    args.deployments = []
    started = time.monotonic()
    print(
        f"validating deploy/ (mirrorgate: {args.mirrorgate}; Kubernetes schemas: "
        f"{', '.join(args.versions)}, strict; renderer: {' '.join(args.renderer) or 'none'})"
    )

    directories = sorted(
        p.parent for name in KUSTOMIZATION_NAMES for p in KUSTOMIZATIONS.rglob(name)
    )
    with tempfile.TemporaryDirectory(prefix="mirrorgate-deploy-") as tmp:
        for directory in directories:
            guarded(rel(directory), check_kustomization, directory, args, Path(tmp))
    guarded(rel(NODES), check_nodes)
    guarded(rel(CONTAINERFILE), check_containerfile, args.deployments)

    elapsed = time.monotonic() - started
    print(f"\n{R.passed} passed, {len(R.failures)} failed, {R.skipped} skipped ({elapsed:.1f} s)")
    if R.failures:
        print(f"\ndeploy/validate.sh: {len(R.failures)} check(s) failed:", file=sys.stderr)
        for failure in R.failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
