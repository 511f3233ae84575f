"""A Kubernetes API emulator for the integration tests: kmock's KubernetesEmulator (PyPI `kmock`)
served over HTTP on a loopback port, with what the tests need on top.

Started by tests/support/kmock.rs; prints `listening on PORT` once it serves, and runs until SIGTERM.

What this adds to kmock's emulator:
- `metadata.resourceVersion`: kmock stores objects as sent and assigns none, while watch clients
  (kube-rs's watcher) need one on every object; each create and update stamps the next number.
  `metadata.namespace` is set from the URL, as an API server does.
- Resources (kinds) declared at start (`--resource GROUP/VERSION/PLURAL=Kind[:namespaced]`) and at
  any time later through `POST /_harness/resources` with the same strings as a JSON list, so that a
  test can install a CRD while a client is running. Only declared resources (and those of objects
  already created) appear in discovery.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import sys

import kmock
from kmock import action


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator, stamping a resourceVersion on every object written."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._versions = itertools.count(1)

    async def _handle(self, request):  # type: ignore[override]
        if (
            request.resource is not None
            and request.action in (action.CREATE, action.UPDATE)
            and isinstance(request.data, dict)
        ):
            metadata = request.data.setdefault("metadata", {})
            metadata["resourceVersion"] = str(next(self._versions))
            # kmock keeps the namespace of the URL beside the object; an API server sets it.
            if request.namespace:
                metadata["namespace"] = request.namespace
        return await super()._handle(request)


def declare(emulator: Emulator, spec: str) -> None:
    """`config.openshift.io/v1/imagetagmirrorsets=ImageTagMirrorSet` (cluster-scoped) or
    `hypershift.openshift.io/v1beta1/hostedclusters=HostedCluster:namespaced`."""
    resource, _, rest = spec.partition("=")
    kind, _, scope = rest.partition(":")
    if resource.count("/") == 1:  # core group: v1/configmaps
        resource = "/" + resource
    group, version, plural = resource.split("/")
    key = f"{group}/{version}/{plural}" if group else f"{version}/{plural}"
    emulator.resources[key] = kmock.ResourceInfo(
        kind=kind or None,
        namespaced=scope == "namespaced",
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--resource", action="append", default=[])
    args = parser.parse_args()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async with Emulator() as emulator:
        for spec in args.resource:
            declare(emulator, spec)

        def register(request):
            for spec in request.data:
                declare(emulator, spec)
            return {"declared": request.data}

        emulator["post /_harness/resources"] << register
        async with kmock.Server(emulator, host="127.0.0.1", port=args.port or None) as server:
            print(f"listening on {server.port}", flush=True)
            await stop.wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
