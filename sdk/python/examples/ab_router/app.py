"""Header-based A/B router: a request whose ``header`` names one of ``variants`` goes to that
variant's backend; every response says which variant served it and how many requests that
variant has had in the current minute on this node (a host counter)."""

from urllib.parse import urlsplit

import wasmgate
from wit_world.imports import counters


class ABRouter(wasmgate.Plugin):
    @classmethod
    def configure(cls, config):
        plugin = cls()
        plugin.header = config.get("header", "x-ab-group")
        plugin.variants = config["variants"]
        for variant, url in plugin.variants.items():
            if variant == "default":
                raise wasmgate.ConfigError(f"variants.{variant}", "`default` names the API's own backend")
            if not urlsplit(url).netloc:
                raise wasmgate.ConfigError(f"variants.{variant}", f"not a URL: {url}")
        return plugin, wasmgate.binding_info(request_headers=wasmgate.only_headers(plugin.header))

    def on_request(self, request):
        asked = wasmgate.header(request, self.header)
        variant = asked if asked in self.variants else "default"
        counted = counters.increment(f"variant:{variant}", 1, 2**64 - 1, 60_000, counters.Consistency.LOCAL)
        backend = None if variant == "default" else wasmgate.BackendTarget(url=self.variants[variant], timeout_ms=None)
        return wasmgate.proceed(
            response_headers=[wasmgate.set_header("x-ab-variant", variant),
                              wasmgate.set_header("x-ab-count", str(counted.count))],
            backend=backend,
        )


Policy = wasmgate.export(ABRouter)
