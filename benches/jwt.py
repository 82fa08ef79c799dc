#!/usr/bin/env python3
"""An admin access token (HS256 JWT, user 1, one hour) signed with the secret given as
the only argument: what the hub's Login would return, so load scripts need no login."""
import base64
import hashlib
import hmac
import json
import sys
import time

b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=")
now = int(time.time())
head = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b(json.dumps({"sub": "1", "roles": ["admin"], "iss": "activity-hub", "aud": "activity-hub", "iat": now, "exp": now + 3600}).encode())
sig = b(hmac.new(sys.argv[1].encode(), head + b"." + body, hashlib.sha256).digest())
print((head + b"." + body + b"." + sig).decode())
