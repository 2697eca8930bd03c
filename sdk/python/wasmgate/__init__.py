"""Wasmgate SDK for Python plugins, built into a component by componentize-py.

A plugin is a class: ``configure(config)`` (a classmethod) gets the binding's config parsed
from JSON and returns ``(plugin, binding_info(...))``, raising :class:`ConfigError` naming
the field it refuses; the instance it returns serves that binding's phases (``on_request``,
``on_response``, ``on_log``), as the Rust SDK's ``Policy`` does. ``Policy = export(MyPlugin)``
in the plugin's module makes it the component's ``wasmgate:plugin/policy``.

The request, response and log entry are decoded from the packed input (wit/plugin.wit,
interface ``policy``) into plain objects with snake_case fields: ``method`` and ``scheme``
as strings (``"GET"``, ``"https"``), ``headers`` as ``(name, value)`` pairs, fields the binding
did not select ``None``. Answers are the WIT types as componentize-py generates them
(``wit_world.imports.types``); header operations are packed here.
"""

import json
import struct
import traceback
from types import SimpleNamespace

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


_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
_OUTCOMES = ("responded", "timed-out", "failed", "not-called")


class _Reader:
    """Reads the packed layout front to back."""

    def __init__(self, data):
        self.data = bytes(data)
        self.at = 0

    def _unpack(self, fmt):
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return value

    def u8(self):
        return self._unpack("<B")

    def raw(self):
        n = self._unpack("<I")
        self.at += n
        return self.data[self.at - n:self.at]

    def str(self):
        return self.raw().decode()

    def pairs(self):
        return [(self.str(), self.str()) for _ in range(self._unpack("<I"))]

    def request(self):
        m = self.u8()
        method = _METHODS[m] if m < len(_METHODS) else self.str()
        scheme = "https" if self.u8() == 1 else "http"
        present = self._unpack("<H")
        bits = iter(1 << i for i in range(10))

        def field(read):
            return read() if present & next(bits) else None

        r = SimpleNamespace(method=method, scheme=scheme)
        r.request_id = field(self.str)
        r.route = field(lambda: SimpleNamespace(api_id=self.str(), group_id=self.str(), environment=self.str()))
        r.host = field(self.str)
        r.path = field(self.str)
        r.query = field(self.str)
        r.path_params = field(self.pairs)
        r.client_ip = field(self.str)
        r.identity = field(self._identity)
        r.context = field(self.pairs)
        has_body = field(lambda: True)
        r.headers = self.pairs()
        r.body = self.raw() if has_body else None
        return r

    def _identity(self):
        flags = self.u8()
        app_id = self.str() if flags & 1 else None
        user = self.str() if flags & 2 else None
        return SimpleNamespace(app_id=app_id, user=user)

    def response(self):
        status = self._unpack("<H")
        outcome = _OUTCOMES[self.u8()]
        latency = self._unpack("<I")
        has_body = self.u8()
        headers = self.pairs()
        body = self.raw() if has_body else None
        return SimpleNamespace(status=status, outcome=outcome, backend_latency_ms=latency, headers=headers, body=body)

    def log_entry(self):
        e = SimpleNamespace(request=self.request(), response=self.response())
        e.start_time_ms = self._unpack("<Q")
        e.total_latency_ms = self._unpack("<I")
        e.request_size = self._unpack("<Q")
        e.response_size = self._unpack("<Q")
        truncated = self.u8()
        e.request_body_truncated = bool(truncated & 1)
        e.response_body_truncated = bool(truncated & 2)
        return e


_OPS = {types.HeaderOp_Set: 0, types.HeaderOp_Append: 1, types.HeaderOp_AppendValue: 2,
        types.HeaderOp_SetIfAbsent: 3, types.HeaderOp_Remove: 4}


def _pack_ops(ops):
    """Header operations in the packed ``header-ops`` layout."""
    out = bytearray()
    for op in ops:
        out.append(_OPS[type(op)])
        for s in (op.value,) if isinstance(op, types.HeaderOp_Remove) else op.value:
            b = s.encode()
            out += struct.pack("<I", len(b)) + b
    return bytes(out)


def _packed(action):
    """An action with its header operations packed, as the contract carries them."""
    if isinstance(action, RequestAction_Continue):
        c = action.value
        c.headers, c.response_headers = _pack_ops(c.headers), _pack_ops(c.response_headers)
    elif isinstance(action, ResponseAction_Continue):
        action.value.headers = _pack_ops(action.value.headers)
    return action


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
            return _packed(bindings[binding].on_request(_Reader(request).request()))

        @_logged
        def on_response(self, binding, exchange):
            r = _Reader(exchange)
            request, response = r.request(), r.response()
            return _packed(bindings[binding].on_response(request, response))

        @_logged
        def on_log(self, binding, entry):
            bindings[binding].on_log(_Reader(entry).log_entry())

    return Policy
