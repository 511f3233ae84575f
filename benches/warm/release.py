#!/usr/bin/env python3
"""Pushes a synthetic OpenShift release payload to a Distribution registry, for benches/warm/run.sh.

    release.py REGISTRY COMPONENTS UNIQUE_MIB OUT_DIR

REGISTRY is host:port (plain HTTP). COMPONENTS component images go to
openshift-release-dev/ocp-v4.0-art-dev (tags component-NNN), sharing layers as real releases do:
every component has the 3 base layers (30% of the unique bytes), one of 5 group layers (30%) and a
layer of its own (40% / COMPONENTS), plus its config. The release image goes to
openshift-release-dev/ocp-release:<version>-x86_64: the base layers and a gzip'd tar layer with
release-manifests/image-references (every component by digest, under quay.io) and
release-metadata; its config carries io.openshift.release.

Component layers are random bytes (incompressible, as compressed layers are; nothing here or in
a warm-up unpacks them). Writes to OUT_DIR: `blobs` (digest size repository, one unique blob a
line), `components` (name digest), `release` (the release pull spec as quay.io/...).
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request

COMPONENT_REPO = "openshift-release-dev/ocp-v4.0-art-dev"
RELEASE_REPO = "openshift-release-dev/ocp-release"
VERSION = "4.99.0"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"


def push_blob(registry, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    head = urllib.request.Request(f"http://{registry}/v2/{repo}/blobs/{digest}", method="HEAD")
    try:
        urllib.request.urlopen(head).close()
        return digest, len(data)
    except urllib.error.HTTPError:
        pass
    start = urllib.request.Request(f"http://{registry}/v2/{repo}/blobs/uploads/", method="POST")
    with urllib.request.urlopen(start) as response:
        location = response.headers["Location"]
    if location.startswith("/"):
        location = f"http://{registry}{location}"
    sep = "&" if "?" in location else "?"
    put = urllib.request.Request(f"{location}{sep}digest={digest}", data=data, method="PUT")
    put.add_header("Content-Type", "application/octet-stream")
    urllib.request.urlopen(put).close()
    return digest, len(data)


def push_manifest(registry, repo, tag, manifest):
    body = json.dumps(manifest).encode()
    put = urllib.request.Request(
        f"http://{registry}/v2/{repo}/manifests/{tag}", data=body, method="PUT"
    )
    put.add_header("Content-Type", MANIFEST)
    urllib.request.urlopen(put).close()
    return "sha256:" + hashlib.sha256(body).hexdigest(), len(body)


def image(registry, repo, tag, config, layers):
    config_digest, config_size = push_blob(registry, repo, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": LAYER, "digest": d, "size": s} for d, s in layers],
    }
    digest, _ = push_manifest(registry, repo, tag, manifest)
    return digest, (config_digest, config_size)


def tar_gz(files):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def main():
    registry, components, unique_mib, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    unique = unique_mib * 1024 * 1024
    blobs = {}  # digest -> (size, repository)

    def layer(repo, size):
        digest, length = push_blob(registry, repo, os.urandom(size))
        blobs.setdefault(digest, (length, repo))
        return digest, length

    base_data = [os.urandom(unique * 10 // 100) for _ in range(3)]
    base = []
    for data in base_data:
        for repo in (COMPONENT_REPO, RELEASE_REPO):
            digest, length = push_blob(registry, repo, data)
        blobs.setdefault(digest, (length, COMPONENT_REPO))
        base.append((digest, length))
    groups = [layer(COMPONENT_REPO, unique * 6 // 100) for _ in range(5)]
    own = unique * 40 // 100 // components
    refs = []
    for i in range(components):
        name = f"component-{i:03}"
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "config": {"Labels": {"name": name}},
             "rootfs": {"type": "layers", "diff_ids": []}}
        ).encode()
        layers = base + [groups[i % 5], layer(COMPONENT_REPO, own)]
        digest, (cd, cs) = image(registry, COMPONENT_REPO, name, config, layers)
        blobs.setdefault(cd, (cs, COMPONENT_REPO))
        refs.append((name, digest))
    stream = {
        "kind": "ImageStream",
        "apiVersion": "image.openshift.io/v1",
        "metadata": {"name": VERSION},
        "spec": {"tags": [
            {"name": name, "from": {"kind": "DockerImage", "name": f"quay.io/{COMPONENT_REPO}@{digest}"}}
            for name, digest in refs
        ]},
    }
    metadata = {"kind": "cincinnati-metadata-v0", "version": VERSION, "previous": []}
    manifests = tar_gz([
        ("release-manifests/image-references", json.dumps(stream).encode()),
        ("release-manifests/release-metadata", json.dumps(metadata).encode()),
    ])
    release_layer = push_blob(registry, RELEASE_REPO, manifests)
    blobs.setdefault(release_layer[0], (release_layer[1], RELEASE_REPO))
    config = json.dumps(
        {"architecture": "amd64", "os": "linux",
         "config": {"Labels": {"io.openshift.release": VERSION}},
         "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    _, (cd, cs) = image(registry, RELEASE_REPO, f"{VERSION}-x86_64", config, base + [release_layer])
    blobs.setdefault(cd, (cs, RELEASE_REPO))
    with open(os.path.join(out, "blobs"), "w") as f:
        for digest, (size, repo) in sorted(blobs.items()):
            f.write(f"{digest} {size} {repo}\n")
    with open(os.path.join(out, "components"), "w") as f:
        for name, digest in refs:
            f.write(f"{name} {digest}\n")
    with open(os.path.join(out, "release"), "w") as f:
        f.write(f"quay.io/{RELEASE_REPO}:{VERSION}-x86_64\n")


if __name__ == "__main__":
    main()
