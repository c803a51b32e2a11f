#!/usr/bin/env python3
"""Seeds the fuzz corpora (fuzz/corpus/<target>/) from the recorded test
vectors (capnagent/tests/vectors/vectors.jsonl) plus a few hand-written
inputs for the parts the vectors do not cover (MCP messages, gRPC messages,
JSON edge cases). Each seed is a file named by the SHA-1 of its content, as
libFuzzer names its own; running the script again adds nothing twice.

    python3 fuzz/seed.py [--vectors PATH]

Input formats (see each target's docs in fuzz/fuzz_targets/):
  token      mode byte ('0' token text, '1' token JSON) + bytes
  predicate  predicate text, or 0xFF + u16 depth + text (parenthesised)
  json, context, receipt   the text itself
  mcp        flag byte + optional "name: value" header lines + "\\n\\n" + body
  grpc       selector byte (method index; +0x80: the body is already framed)
"""

import argparse
import base64
import hashlib
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def add(corpus, target, data):
    if isinstance(data, str):
        data = data.encode()
    corpus.setdefault(target, set()).add(data)


def b64decode(token):
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def from_vectors(corpus, path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            v = json.loads(line)
            token = v.get("token")
            if isinstance(token, str) and token:
                add(corpus, "token", b"0" + token.encode())
                try:
                    raw = b64decode(token)
                except ValueError:
                    raw = None
                if raw is not None:
                    add(corpus, "token", b"1" + raw)
                    add(corpus, "json", raw)
                    try:
                        for c in json.loads(raw).get("caveats", []):
                            if isinstance(c, dict) and isinstance(c.get("predicate"), str):
                                add(corpus, "predicate", c["predicate"])
                    except (ValueError, AttributeError):
                        pass
            for p in v.get("predicates") or []:
                if isinstance(p, str):
                    add(corpus, "predicate", p)
            if isinstance(v.get("predicate"), str):
                add(corpus, "predicate", v["predicate"])
            ctx = v.get("ctx_json")
            if isinstance(ctx, str):
                add(corpus, "context", ctx)
                add(corpus, "json", ctx)
            expected = v.get("expected")
            receipts = [v.get("receipt_json")]
            if isinstance(expected, dict):
                receipts.append(expected.get("receipt"))
            for r in receipts:
                if isinstance(r, str):
                    add(corpus, "receipt", r)
                    add(corpus, "json", r)


def predicates(corpus):
    for depth, inner in [(1000, 'tool == "x"'), (1025, 'tool == "x"'), (5000, "caller == \"a\"")]:
        add(corpus, "predicate", b"\xff" + struct.pack(">H", depth) + inner.encode())
    add(corpus, "predicate", " AND ".join(f"arg.n{i} <= {i}" for i in range(40)))


JSON_EDGES = [
    "null", "-0", "1e400", "[1e309]", "123456789012345678901234567890", "1.5e-3",
    '"\\ud83d\\ude00"', '"\\ud800"', '{"a":1,"a":2}', "[" * 127 + "]" * 127,
    "[" * 128 + "]" * 128, "\ufeffnull", '"\u2028"', "[1,]", "01", '"a\\u0000b"',
]


def json_edges(corpus):
    for text in JSON_EDGES:
        add(corpus, "json", text)


def mcp(corpus):
    post = 0  # POST, Accept: json + SSE, no version header, default policy
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "c", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
         "params": {"name": "bank_wire", "arguments": {"amount_cents": 1200, "to": "acct-1"}}},
        {"jsonrpc": "2.0", "id": "s-4", "method": "resources/read",
         "params": {"uri": "file:///srv/a.txt", "_meta": {"progressToken": 1}}},
        {"jsonrpc": "2.0", "id": 5, "method": "ping"},
        {"jsonrpc": "2.0", "id": 6, "result": {}},
        {"jsonrpc": "2.0", "id": 7, "method": "tasks/get", "params": {"taskId": "t-1"}},
        {"jsonrpc": "2.0", "id": 8, "method": "server/discover",
         "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}},
        [{"jsonrpc": "2.0", "id": 9, "method": "ping"}],
    ]
    for m in messages:
        add(corpus, "mcp", bytes([post]) + json.dumps(m, separators=(",", ":")).encode())
    call = json.dumps(messages[3], separators=(",", ":")).encode()
    add(corpus, "mcp", bytes([post | 0x20]) + b"mcp-method: tools/call\nmcp-name: bank_wire\n\n" + call)
    add(corpus, "mcp", bytes([post | 0x20]) + b"mcp-method: tools/call\nmcp-name: =?base64?YmFua193aXJl?=\n\n" + call)
    add(corpus, "mcp", bytes([post | 0x08]) + call)
    add(corpus, "mcp", bytes([post | 0x80]) + call)
    add(corpus, "mcp", bytes([5]))
    add(corpus, "mcp", bytes([6]))
    add(corpus, "mcp", bytes([7]))


def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, wire, payload):
    key = varint(number << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    if wire == 2:
        return key + varint(len(payload)) + payload
    raise ValueError(wire)


def frame(message):
    return b"\x00" + struct.pack(">I", len(message)) + message


def grpc(corpus):
    purchase = field(1, 2, b"acme") + field(2, 0, 1299) + field(3, 2, b"EUR")
    wire = field(1, 2, b"acct-1") + field(2, 0, -5)
    log = field(1, 2, b"line")
    child = field(1, 2, b"child") + field(4, 0, 1)
    node = (field(1, 2, b"root") + field(2, 2, child) + field(2, 2, child + field(2, 2, child))
            + field(3, 2, field(1, 2, b"k") + field(2, 2, child)) + field(5, 2, b"\x00\xff")
            + field(12, 2, b"text") + field(20, 2, varint(1) + varint(2 ** 63))
            + field(26, 0, 2 ** 64 - 1))
    struct_meta = field(1, 2, field(1, 2, b"key") + field(2, 2, field(3, 2, b"v")))
    for selector, message in [(0, purchase), (1, wire), (2, log), (3, node), (3, b""),
                              (4, b""), (5, struct_meta), (6, purchase)]:
        add(corpus, "grpc", bytes([selector]) + message)
        add(corpus, "grpc", bytes([selector | 0x80]) + frame(message))
    add(corpus, "grpc", bytes([0x80]) + b"\x01\x00\x00\x00\x00")
    add(corpus, "grpc", bytes([0x80]) + frame(purchase) + b"\x00")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", default=os.path.join(
        HERE, "..", "capnagent", "tests", "vectors", "vectors.jsonl"))
    args = parser.parse_args()
    corpus = {}
    from_vectors(corpus, args.vectors)
    predicates(corpus)
    json_edges(corpus)
    mcp(corpus)
    grpc(corpus)
    for target, seeds in sorted(corpus.items()):
        folder = os.path.join(HERE, "corpus", target)
        os.makedirs(folder, exist_ok=True)
        new = 0
        for data in seeds:
            path = os.path.join(folder, hashlib.sha1(data).hexdigest())
            if not os.path.exists(path):
                with open(path, "wb") as f:
                    f.write(data)
                new += 1
        print(f"{target}: {len(seeds)} seeds, {new} new")


if __name__ == "__main__":
    main()
