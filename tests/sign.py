#!/usr/bin/env python3
"""Sign a request with the public APIG SDK signer (pip: apigateway-sdk-python), for the
AK/SK tests: an implementation of the algorithm that is not ours.

stdin:  {"method", "url", "headers": {..}, "body_hex", "key", "secret"}
stdout: {"headers": {..}, "uri": "/path?canonical-query"}
"""
import json
import sys

from apigateway_sdk_python import signer

req = json.load(sys.stdin)
r = signer.HttpRequest(req["method"], req["url"], req.get("headers") or {})
r.body = bytes.fromhex(req.get("body_hex", ""))
s = signer.Signer()
s.Key = req["key"]
s.Secret = req["secret"]
s.Sign(r)
print(json.dumps({"headers": r.headers, "uri": r.uri}))
