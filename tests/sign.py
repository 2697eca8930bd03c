#!/usr/bin/env python3
"""Sign requests for the app-auth tests with code that is not ours.

SDK-HMAC-SHA256, with the public APIG SDK signer (pip: apigateway-sdk-python):
  stdin:  {"method", "url", "headers": {..}, "body_hex", "key", "secret"}
  stdout: {"headers": {..}, "uri": "/path?canonical-query"}

HMAC in the APISIX hmac-auth style, with Python's standard library (mode "hmac"):
  stdin:  {"mode": "hmac", "method", "target", "headers": {..}, "signed": [..], "key", "secret"}
  stdout: {"authorization": "...", "date": "<IMF-fixdate now>"}
"""
import base64
import email.utils
import hashlib
import hmac
import json
import sys

req = json.load(sys.stdin)
if req.get("mode") == "hmac":
    headers = {k.lower(): v for k, v in req.get("headers", {}).items()}
    headers.setdefault("date", email.utils.formatdate(usegmt=True))
    lines = [req["key"]]
    for name in req["signed"]:
        if name == "@request-target":
            lines.append("@request-target: %s %s" % (req["method"].lower(), req["target"]))
        else:
            lines.append("%s: %s" % (name, headers[name].strip()))
    signing = "".join(line + "\n" for line in lines)
    mac = hmac.new(req["secret"].encode(), signing.encode(), hashlib.sha256).digest()
    auth = 'Signature keyId="%s",algorithm="hmac-sha256",headers="%s",signature="%s"' % (
        req["key"], " ".join(req["signed"]), base64.b64encode(mac).decode())
    print(json.dumps({"authorization": auth, "date": headers["date"]}))
    sys.exit(0)

from apigateway_sdk_python import signer  # noqa: E402

r = signer.HttpRequest(req["method"], req["url"], req.get("headers") or {})
r.body = bytes.fromhex(req.get("body_hex", ""))
s = signer.Signer()
s.Key = req["key"]
s.Secret = req["secret"]
s.Sign(r)
print(json.dumps({"headers": r.headers, "uri": r.uri}))
