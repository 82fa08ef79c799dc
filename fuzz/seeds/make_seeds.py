#!/usr/bin/env python3
"""Writes the committed seed inputs of the request fuzz targets (fuzz/seeds/<target>/).

Each seed is a well-formed request behind the targets' 3-byte header (rpc, flags,
caller; see the top of each target), so fuzzing starts from inputs that pass decoding
and validation instead of having to discover valid emails, types and page tokens.
Messages are encoded from protobuf text format by the protoc that build.rs vendors.
Run from anywhere: python3 fuzz/seeds/make_seeds.py
"""

import glob
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")


def protoc():
    found = glob.glob(
        os.path.expanduser("~/.cargo/registry/src/*/protoc-bin-vendored-linux-x86_64-*/bin/protoc")
    )
    if not found:
        raise SystemExit("no vendored protoc: run `cargo build` once so cargo fetches it")
    return sorted(found)[-1]


def encode(message, text):
    """The binary encoding of `text` (protobuf text format) as `message`."""
    include = os.path.join(os.path.dirname(os.path.dirname(protoc())), "include")
    proto = {"user": "user/v1/user.proto", "auth": "auth/v1/auth.proto", "activity": "activity/v1/activity.proto"}[
        message.split(".")[0]
    ]
    return subprocess.run(
        [protoc(), "-I", os.path.join(ROOT, "proto"), "-I", include, "--encode=" + message, proto],
        input=text.encode(),
        capture_output=True,
        check=True,
    ).stdout


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def delimited(message, texts):
    """A client stream: length-delimited messages."""
    return b"".join(varint(len(m)) + m for m in (encode(message, t) for t in texts))


def fnv1a(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def write(target, name, header, body):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes(header) + body)


# user_service flags: bit 0 open sign-up, bit 1 authenticated, bits 2-5 roles
# (1 USER, 2 ADMIN, 4 MODERATOR, 8 PUBLISHER).
ADMIN, PLAIN, ANON_OPEN = 0x02 | (2 << 2), 0x02 | (1 << 2), 0x01
U = "user.v1."
write("user_service", "get_id", [0, ADMIN, 1], encode(U + "GetUserRequest", "user_id: 7"))
write("user_service", "get_email", [0, PLAIN, 1], encode(U + "GetUserRequest", 'email: "ann@example.com"'))
write("user_service", "delete_username", [1, PLAIN, 3], encode(U + "GetUserRequest", 'username: "ann"'))
CREATE = (
    'email: "ann@example.com" username: "ann_1" password: "correct horse" '
    'first_name: "Ann" last_name: "Lee" roles: USER_ROLE_USER roles: USER_ROLE_PUBLISHER'
)
write("user_service", "create_admin", [2, ADMIN, 1], encode(U + "CreateUserRequest", CREATE))
write(
    "user_service",
    "create_signup",
    [2, ANON_OPEN, 0],
    encode(U + "CreateUserRequest", 'email: "bob@mail.example.org" username: "bob" password: "12345678"'),
)
write(
    "user_service",
    "update",
    [3, ADMIN, 1],
    encode(
        U + "UpdateUserRequest",
        'user_id: 1 username: "ann2" first_name: "Ann" bio: "hi\\nthere" '
        'preferences { key: "theme" value: "light" } preferences { key: "a" value: "" } '
        'status: USER_STATUS_SUSPENDED avatar_url: "https://example.com/a.png"',
    ),
)
write("user_service", "update_own", [3, PLAIN, 5], encode(U + "UpdateUserRequest", 'user_id: 5 last_name: "Lee"'))
write(
    "user_service",
    "list",
    [4, ADMIN, 1],
    encode(U + "ListUsersRequest", 'page: 2 limit: 10 status: USER_STATUS_ACTIVE search: " ann "'),
)
token = "k1.42.%016x" % fnv1a(b"1\x00ann")
write(
    "user_service",
    "list_token",
    [4, ADMIN, 1],
    encode(U + "ListUsersRequest", 'limit: 10 status: USER_STATUS_ACTIVE search: "ann" page_token: "%s"' % token),
)
write("user_service", "stream", [5, ADMIN | (4 << 2), 1], encode(U + "ListUsersRequest", "limit: 0"))
write(
    "user_service",
    "bulk",
    [6, ADMIN, 1],
    delimited(
        U + "CreateUserRequest",
        [CREATE, 'email: "c@d.io" username: "cee" password: "password1" roles: USER_ROLE_MODERATOR'],
    ),
)
write(
    "user_service",
    "activity",
    [7, PLAIN, 1],
    delimited(
        U + "UserActivityRequest",
        ["action: SUBSCRIBE_USER_UPDATES user_id: 1", "action: UNSUBSCRIBE_USER_UPDATES user_id: 1"],
    ),
)

A = "auth.v1."
write("auth_service", "login_email", [0, 0, 0], encode(A + "LoginRequest", 'email: "ann@example.com" password: "pw"'))
write("auth_service", "login_username", [0, 0, 0], encode(A + "LoginRequest", 'username: "ann" password: "pw"'))
write(
    "auth_service",
    "token",
    [1, 0, 7],
    b"eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3IiwiaXNzIjoiYWN0aXZpdHktaHViIn0.c2lnbmF0dXJl",
)

# activity_service flags: bits 0-1 max recipients (3 = 10000), bits 2-3 max payload
# (2 = 4096), bits 4-5 default window (2 = 256), bit 6 authenticated, bit 7 publisher.
PUB = 3 | (2 << 2) | (2 << 4) | 0x40 | 0x80
READER = 3 | (2 << 2) | (2 << 4) | 0x40
V = "activity.v1."
PUBLISH = (
    'recipient_ids: [2, 1, 2] type: "order.filled" payload: "{\\"id\\":42}" '
    'content_type: "application/json" attributes { key: "region" value: "eu" } idempotency_key: "k-1"'
)
write("activity_service", "publish", [0, PUB, 9], encode(V + "PublishRequest", PUBLISH))
write(
    "activity_service",
    "publish_stream",
    [1, PUB, 9],
    delimited(V + "PublishRequest", [PUBLISH, 'recipient_ids: 3 type: "a.b"', 'recipient_ids: 0 type: "x"']),
)
write(
    "activity_service",
    "subscribe",
    [2, READER, 1],
    delimited(
        V + "SubscribeRequest",
        [
            'start { consumer_id: "laptop" start_from: START_FROM_EARLIEST types: ["order.filled", "a"] '
            "window: 10 ack_mode: ACK_MODE_EXPLICIT }",
            "ack { seq: 1 }",
            "ack { seq: 2 }",
        ],
    ),
)
write(
    "activity_service",
    "subscribe_seq",
    [2, READER, 1],
    delimited(
        V + "SubscribeRequest",
        ["start { user_id: 1 start_from: START_FROM_SEQ after_seq: 5 ack_mode: ACK_MODE_NONE }"],
    ),
)
write(
    "activity_service",
    "list_events",
    [3, READER, 1],
    encode(V + "ListEventsRequest", 'user_id: 1 after_seq: 3 limit: 10 types: ["b", "a", "b"]'),
)
write("activity_service", "get_cursor", [4, READER, 1], encode(V + "GetCursorRequest", 'user_id: 1 consumer_id: "laptop"'))
