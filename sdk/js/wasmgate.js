// Wasmgate SDK for JavaScript plugins, built into a component by componentize-js.
//
// A plugin module exports `policy = definePolicy({ configure, onRequest, onResponse, onLog })`.
// `configure(config)` gets the binding's config already parsed from JSON and returns
// `{ state, info }`: whatever the phases need (kept per binding, as the Rust SDK does) and
// what the binding declares (`bindingInfo({...})`). The phases get `(state, request, ...)`.
// Values follow the WIT types as componentize-js maps them: records are objects with
// camelCase fields, variants `{ tag, val }`, options `undefined`, u64 `BigInt`.
import { write } from 'wasmgate:plugin/log@0.1.0';

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
    onRequest: logged((binding, request) =>
      plugin.onRequest ? plugin.onRequest(state(binding), request) : proceed(),
    ),
    onResponse: logged((binding, request, response) =>
      plugin.onResponse
        ? plugin.onResponse(state(binding), request, response)
        : { tag: 'continue', val: { headers: [] } },
    ),
    onLog: logged((binding, entry) => plugin.onLog?.(state(binding), entry)),
  };
}
