"""A Kubernetes API emulator for the integration tests: kmock's KubernetesEmulator (PyPI `kmock`)
served over HTTP on a loopback port, with what the tests need on top.

Started by tests/support/kmock.rs; prints `listening on PORT` once it serves, and runs until SIGTERM.

What this adds to kmock's emulator:
- `metadata.resourceVersion`: kmock stores objects as sent and assigns none, while watch clients
  (kube-rs's watcher) need one on every object; each create and update stamps the next number.
  `metadata.namespace` is set from the URL, as an API server does. Lists carry a version too, and
  a watch resuming from a version of an earlier instance of the server (restarted empty) gets
  410 Gone, so the client re-lists as it would against a real API server.
- Resources (kinds) declared at start (`--resource GROUP/VERSION/PLURAL=Kind[:namespaced]`) and at
  any time later through `POST /_harness/resources` with the same strings as a JSON list, so that a
  test can install a CRD while a client is running. Only declared resources (and those of objects
  already created) appear in discovery.
- RBAC refusals: `POST /_harness/forbid` with a JSON list of plurals (`["imagedigestmirrorsets"]`)
  makes every request on those resources answer 403 Forbidden with a Kubernetes Status, as an API
  server does for a service account without the permission; discovery still lists them.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import secrets
import signal
import sys

import aiohttp.web
import kmock
from kmock import action


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator, stamping a resourceVersion on every object written, and answering a
    watch that resumes from another server instance's resourceVersion with 410 Gone."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._versions = itertools.count(1)
        # Resource versions of this instance start with its epoch: a watch resuming from another
        # instance's version (the server was restarted empty) must re-list, as a real API server
        # makes it with "410 Gone: too old resource version".
        self._epoch = secrets.token_hex(4)
        self.forbidden: set[str] = set()

    def _version(self) -> str:
        return f"{self._epoch}-{next(self._versions)}"

    async def _serve_list(self, request):  # type: ignore[override]
        answer = await super()._serve_list(request)
        answer["metadata"]["resourceVersion"] = self._version()
        return answer

    async def _serve_watch(self, request):  # type: ignore[override]
        since = (request.params or {}).get("resourceVersion")
        if since and not since.startswith(self._epoch):
            yield b""
            yield {
                "type": "ERROR",
                "object": {
                    "apiVersion": "v1",
                    "kind": "Status",
                    "status": "Failure",
                    "code": 410,
                    "reason": "Expired",
                    "message": f"too old resource version: {since}",
                },
            }
            return
        async for event in super()._serve_watch(request):
            yield event

    async def _handle(self, request):  # type: ignore[override]
        plural = getattr(request.resource, "plural", None)
        if plural in self.forbidden:
            verb = {action.LIST: "list", action.WATCH: "watch"}.get(request.action, "get")
            return aiohttp.web.json_response(
                {
                    "apiVersion": "v1",
                    "kind": "Status",
                    "metadata": {},
                    "status": "Failure",
                    "reason": "Forbidden",
                    "code": 403,
                    "message": f'{plural} is forbidden: User "system:serviceaccount:mirrorgate:mirrorgate" '
                    f'cannot {verb} resource "{plural}" at the cluster scope',
                },
                status=403,
            )
        if (
            request.resource is not None
            and request.action in (action.CREATE, action.UPDATE)
            and isinstance(request.data, dict)
        ):
            metadata = request.data.setdefault("metadata", {})
            metadata["resourceVersion"] = self._version()
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

        def forbid(request):
            emulator.forbidden.update(request.data)
            return {"forbidden": sorted(emulator.forbidden)}

        emulator["post /_harness/forbid"] << forbid
        async with kmock.Server(emulator, host="127.0.0.1", port=args.port or None) as server:
            print(f"listening on {server.port}", flush=True)
            await stop.wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
