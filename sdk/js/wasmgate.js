// Wasmgate SDK for JavaScript plugins, built into a component by componentize-js.
//
// A plugin module exports `policy = definePolicy({ configure, onRequest, onResponse, onLog })`.
// `configure(config)` gets the binding's config already parsed from JSON and returns
// `{ state, info }`: whatever the phases need (kept per binding, as the Rust SDK does) and
// what the binding declares (`bindingInfo({...})`). The phases get `(state, request, ...)`.
// The request, response and log entry are decoded from the packed input (wit/plugin.wit,
// interface `policy`) into plain objects with camelCase fields: `method` and `scheme` as
// strings (`'GET'`, `'https'`), `headers` as `[name, value]` pairs, fields the binding did
// not select `undefined`, `body` a `Uint8Array`. Answers follow the WIT types as
// componentize-js maps them: records are objects, variants `{ tag, val }`, u64 `BigInt`;
// header operations are packed here.
import { write } from 'wasmgate:plugin/log@0.2.1';

/// A config error naming the field (`variants.beta`), as the gateway reports it.
export class ConfigError extends Error {
  constructor(field, message) {
    super(message);
    // componentize-js returns a thrown error's `payload` as the `err` of a result.
    this.payload = { field, message };
  }
}

/// What a binding declares; anything left out reads nothing and runs no phase but `request`.
export function bindingInfo(declared = {}) {
  return {
    phases: { request: true, response: false, log: false },
    requestFields: {},
    requestHeaders: { tag: 'none' },
    responseHeaders: { tag: 'none' },
    requestBody: { tag: 'none' },
    responseBody: { tag: 'none' },
    fixedResponseHeaders: [],
    logSinks: [],
    httpGrants: [],
    ...declared,
  };
}

/// Only these headers (lower-case names) are passed to the plugin.
export const onlyHeaders = (...names) => ({ tag: 'only', val: names });

/// Let the request go on, with changes (`headers`, `responseHeaders`, `backend`, ...).
export function proceed(changes = {}) {
  return {
    tag: 'continue',
    val: { headers: [], responseHeaders: [], context: [], ...changes },
  };
}

/// Answer the request now; the backend is not called.
export function respond(status, body = '', headers = []) {
  return { tag: 'respond', val: { status, headers, body: new TextEncoder().encode(body) } };
}

/// Header operations.
export const setHeader = (name, value) => ({ tag: 'set', val: [name, value] });
export const removeHeader = (name) => ({ tag: 'remove', val: name });

/// The first value of header `name` (lower-case), if the binding selected it.
export function header(message, name) {
  const found = message.headers.find(([n]) => n === name);
  return found ? found[1] : undefined;
}

export const log = {
  debug: (m) => write('debug', m),
  info: (m) => write('info', m),
  warn: (m) => write('warn', m),
  error: (m) => write('error', m),
};

// An uncaught error fails the call; its message and stack go to the gateway's log (the
// plugin has no stderr).
function logged(phase) {
  return (...args) => {
    try {
      return phase(...args);
    } catch (e) {
      if (!(e instanceof ConfigError)) write('error', `plugin failed: ${e}\n${e?.stack ?? ''}`);
      throw e;
    }
  };
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH'];
const OUTCOMES = ['responded', 'timed-out', 'failed', 'not-called'];
const utf8 = new TextDecoder();
const encoder = new TextEncoder();

// Reads the packed layout front to back.
class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.at = 0;
  }
  u8() { return this.view.getUint8(this.at++); }
  u16() { const v = this.view.getUint16(this.at, true); this.at += 2; return v; }
  u32() { const v = this.view.getUint32(this.at, true); this.at += 4; return v; }
  u64() { const v = this.view.getBigUint64(this.at, true); this.at += 8; return v; }
  raw() { const n = this.u32(); const v = this.bytes.subarray(this.at, this.at + n); this.at += n; return v; }
  str() { return utf8.decode(this.raw()); }
  pairs() {
    const out = [];
    for (let n = this.u32(); n > 0; n--) out.push([this.str(), this.str()]);
    return out;
  }
  request() {
    const m = this.u8();
    const method = m < METHODS.length ? METHODS[m] : this.str();
    const scheme = this.u8() === 1 ? 'https' : 'http';
    const present = this.u16();
    let bit = 1;
    const field = (read) => { const on = present & bit; bit <<= 1; return on ? read() : undefined; };
    const r = { method, scheme };
    r.requestId = field(() => this.str());
    r.route = field(() => ({ apiId: this.str(), groupId: this.str(), environment: this.str() }));
    r.host = field(() => this.str());
    r.path = field(() => this.str());
    r.query = field(() => this.str());
    r.pathParams = field(() => this.pairs());
    r.clientIp = field(() => this.str());
    r.identity = field(() => {
      const flags = this.u8();
      return { appId: flags & 1 ? this.str() : undefined, user: flags & 2 ? this.str() : undefined };
    });
    r.context = field(() => this.pairs());
    const hasBody = field(() => true);
    r.headers = this.pairs();
    r.body = hasBody ? this.raw() : undefined;
    return r;
  }
  response() {
    const status = this.u16();
    const outcome = OUTCOMES[this.u8()];
    const backendLatencyMs = this.u32();
    const hasBody = this.u8() !== 0;
    const headers = this.pairs();
    return { status, outcome, backendLatencyMs, headers, body: hasBody ? this.raw() : undefined };
  }
}

const OPS = { set: 0, append: 1, 'append-value': 2, 'set-if-absent': 3, remove: 4 };

// Header operations in the packed `header-ops` layout.
function packOps(ops = []) {
  const parts = [];
  for (const { tag, val } of ops) {
    const strings = tag === 'remove' ? [val] : val;
    parts.push(Uint8Array.of(OPS[tag]));
    for (const s of strings) {
      const b = encoder.encode(s);
      const n = new Uint8Array(4);
      new DataView(n.buffer).setUint32(0, b.length, true);
      parts.push(n, b);
    }
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function packRequestAction(a) {
  if (a.tag !== 'continue') return a;
  const c = a.val;
  return { tag: 'continue', val: { ...c, headers: packOps(c.headers), responseHeaders: packOps(c.responseHeaders) } };
}

function packResponseAction(a) {
  return a.tag === 'continue' ? { tag: 'continue', val: { ...a.val, headers: packOps(a.val.headers) } } : a;
}

/// Turn a plugin object into the component's `wasmgate:plugin/policy` export.
export function definePolicy(plugin) {
  const states = [];
  const state = (binding) => {
    if (!(binding in states)) throw new Error(`binding ${binding} was not configured`);
    return states[binding];
  };
  return {
    configure: logged((binding, text) => {
      let config;
      try {
        config = JSON.parse(text);
      } catch (e) {
        throw new ConfigError('', `not JSON: ${e.message}`);
      }
      const { state, info } = plugin.configure(config);
      states[binding] = state;
      return info;
    }),
    onRequest: logged((binding, input) =>
      packRequestAction(
        plugin.onRequest ? plugin.onRequest(state(binding), new Reader(input).request()) : proceed(),
      ),
    ),
    onResponse: logged((binding, input) => {
      const r = new Reader(input);
      const [request, response] = [r.request(), r.response()];
      return packResponseAction(
        plugin.onResponse
          ? plugin.onResponse(state(binding), request, response)
          : { tag: 'continue', val: { headers: [] } },
      );
    }),
    onLog: logged((binding, input) => {
      if (!plugin.onLog) return;
      const r = new Reader(input);
      const entry = { request: r.request(), response: r.response() };
      entry.startTimeMs = r.u64();
      entry.totalLatencyMs = r.u32();
      entry.requestSize = r.u64();
      entry.responseSize = r.u64();
      const truncated = r.u8();
      entry.requestBodyTruncated = (truncated & 1) !== 0;
      entry.responseBodyTruncated = (truncated & 2) !== 0;
      plugin.onLog(state(binding), entry);
    }),
  };
}
