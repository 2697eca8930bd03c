"""Wasmgate SDK for Python plugins, built into a component by componentize-py.

A plugin is a class: ``configure(config)`` (a classmethod) gets the binding's config parsed
from JSON and returns ``(plugin, binding_info(...))``, raising :class:`ConfigError` naming
the field it refuses; the instance it returns serves that binding's phases (``on_request``,
``on_response``, ``on_log``), as the Rust SDK's ``Policy`` does. ``Policy = export(MyPlugin)``
in the plugin's module makes it the component's ``wasmgate:plugin/policy``.

The values are the WIT types as componentize-py generates them (``wit_world.imports.types``):
dataclasses with snake_case fields, variants as one class per case, options as ``None``.
"""

import json
import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log as _log
from wit_world.imports import types
from wit_world.imports.types import (  # noqa: F401  (re-exported for plugins)
    BackendTarget,
    BindingInfo,
    BodyNeed_None_,
    HeaderOp_Remove,
    HeaderOp_Set,
    HeaderSelection_None_,
    HeaderSelection_Only,
    Phases,
    Reply,
    RequestAction_Continue,
    RequestAction_Respond,
    RequestChanges,
    RequestFields,
    ResponseAction_Continue,
    ResponseChanges,
)


class ConfigError(Exception):
    """A config refused, naming the field (``variants.beta``), as the gateway reports it."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field
        self.message = message


def binding_info(phases=Phases.REQUEST, request_fields=RequestFields(0), request_headers=None,
                 response_headers=None, fixed_response_headers=(), http_grants=()):
    """What a binding declares; anything left out is not read."""
    return BindingInfo(
        phases=phases,
        request_fields=request_fields,
        request_headers=request_headers or HeaderSelection_None_(),
        response_headers=response_headers or HeaderSelection_None_(),
        request_body=BodyNeed_None_(),
        response_body=BodyNeed_None_(),
        fixed_response_headers=list(fixed_response_headers),
        log_sinks=[],
        http_grants=list(http_grants),
    )


def only_headers(*names):
    """Only these headers (lower-case names) are passed to the plugin."""
    return HeaderSelection_Only(list(names))


def proceed(headers=(), response_headers=(), path=None, query=None, context=(), backend=None):
    """Let the request go on, with changes."""
    return RequestAction_Continue(RequestChanges(
        headers=list(headers), response_headers=list(response_headers), path=path, query=query,
        identity=None, context=list(context), backend=backend,
    ))


def respond(status, body=b"", headers=()):
    """Answer the request now; the backend is not called."""
    if isinstance(body, str):
        body = body.encode()
    return RequestAction_Respond(Reply(status=status, headers=list(headers), body=body))


def set_header(name, value):
    return HeaderOp_Set((name, value))


def remove_header(name):
    return HeaderOp_Remove(name)


def header(message, name):
    """The first value of header ``name`` (lower case), if the binding selected it."""
    for n, v in message.headers:
        if n == name:
            return v
    return None


def log(level, message):
    """A line in the gateway's log, tagged with the API and the plugin."""
    _log.write(getattr(_log.Level, level.upper()), message)


class Plugin:
    """Base class: phases a plugin does not override change nothing."""

    def on_request(self, request):
        return proceed()

    def on_response(self, request, response):
        return ResponseAction_Continue(ResponseChanges(status=None, headers=[]))

    def on_log(self, entry):
        pass


def _logged(phase):
    # An uncaught exception fails the call; its traceback goes to the gateway's log (the
    # plugin has no stderr).
    def call(self, binding, *args):
        try:
            return phase(self, binding, *args)
        except Err:
            raise
        except BaseException:
            log("error", f"plugin failed: {traceback.format_exc()}")
            raise
    return call


def export(plugin_class):
    """The ``wasmgate:plugin/policy`` export for ``plugin_class``: assign it to ``Policy``."""
    bindings = {}

    class Policy(exports.Policy):
        @_logged
        def configure(self, binding, config):
            try:
                plugin, info = plugin_class.configure(json.loads(config))
            except ValueError as e:
                raise Err(types.ConfigError("", f"not JSON: {e}"))
            except ConfigError as e:
                raise Err(types.ConfigError(e.field, e.message))
            bindings[binding] = plugin
            return info

        @_logged
        def on_request(self, binding, request):
            return bindings[binding].on_request(request)

        @_logged
        def on_response(self, binding, request, response):
            return bindings[binding].on_response(request, response)

        @_logged
        def on_log(self, binding, entry):
            bindings[binding].on_log(entry)

    return Policy
