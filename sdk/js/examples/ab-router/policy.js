// Header-based A/B router: a request whose `header` names one of `variants` goes to that
// variant's backend; every response says which variant served it and how many requests
// that variant has had in the current minute on this node (a host counter).
import { increment } from 'wasmgate:plugin/counters@0.2.1';
import { ConfigError, bindingInfo, definePolicy, header, onlyHeaders, proceed, setHeader } from '../../wasmgate.js';

export const policy = definePolicy({
  configure(config) {
    const name = config.header ?? 'x-ab-group';
    for (const [variant, url] of Object.entries(config.variants)) {
      if (variant === 'default') throw new ConfigError(`variants.${variant}`, '`default` names the API\'s own backend');
            try {
        new URL(url);
      } catch {
        throw new ConfigError(`variants.${variant}`, `not a URL: ${url}`);
      }
    }
    return {
      state: { header: name, variants: config.variants },
      info: bindingInfo({ requestHeaders: onlyHeaders(name) }),
    };
  },

  onRequest(state, request) {
    const asked = header(request, state.header);
    const variant = asked !== undefined && Object.hasOwn(state.variants, asked) ? asked : 'default';
    const { count } = increment(`variant:${variant}`, 1, 18446744073709551615n, 60000n, 'local');
    return proceed({
      responseHeaders: [setHeader('x-ab-variant', variant), setHeader('x-ab-count', String(count))],
      backend: variant === 'default' ? undefined : { url: state.variants[variant] },
    });
  },
});
