#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (run from anywhere).

Real NTP packets (client request, server reply, KoD RATE, symmetric,
broadcast, with extension fields, with every MAC type and a crypto-NAK),
small configuration files and control requests. The MACs use the keys of
fuzz_targets/mac_verify.rs.
"""
import hashlib
import os
import shutil
import struct

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

ROOT = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(ROOT, "corpus")


def header(li_vn_mode, stratum=0, poll=6, precision=-20, refid=b"\0\0\0\0",
           org=0, rec=0, xmt=0xE90B6C4E12345678, delay=0, disp=0, ref=0):
    return struct.pack(">BBbbII4sQQQQ", li_vn_mode, stratum, poll, precision,
                       delay, disp, refid, ref, org, rec, xmt)


def ext(field_type, value):
    length = max(16, (4 + len(value) + 3) // 4 * 4)
    return struct.pack(">HH", field_type, length) + value.ljust(length - 4, b"\0")


def cmac(key, data):
    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


KEYS = {
    1: lambda d: hashlib.md5(b"strata-md5-key" + d).digest(),
    2: lambda d: hashlib.sha1(bytes(range(1, 21)) + d).digest(),
    3: lambda d: hashlib.sha256(b"sha256secret" + d).digest()[:20],
    4: lambda d: cmac(bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"), d),
    5: lambda d: hashlib.md5(b"untrusted-key" + d).digest(),
}


def signed(body, key_id):
    return body + struct.pack(">I", key_id) + KEYS[key_id](body)


client = header(0x23)
server = header(0x24, stratum=2, refid=bytes([10, 200, 0, 1]), org=0xE90B6C4E12345678,
                rec=0xE90B6C4E22222222, xmt=0xE90B6C4E33333333, delay=0x100, disp=0x200,
                ref=0xE90B6C0000000000)
kod = header(0xE4, stratum=0, refid=b"RATE", org=0xE90B6C4E12345678)
sym = header(0x21, stratum=3, refid=b"\x7f\0\0\x01")
bcast = header(0x25, stratum=2, refid=b"GPS\0")
old_v3 = header(0x1B)
with_ext = client + ext(0x0104, b"\xaa" * 12) + ext(0x0204, b"unique identifier " * 2)
with_ext28 = client + ext(0x0104, b"\x55" * 24)

packets = {
    "client": client, "server": server, "kod_rate": kod, "symmetric": sym,
    "broadcast": bcast, "v3_client": old_v3, "with_ext": with_ext, "with_ext28": with_ext28,
    "crypto_nak": server + b"\0\0\0\0",
}
for key_id in KEYS:
    packets[f"client_key{key_id}"] = signed(client, key_id)
packets["server_sha1_ext"] = signed(server + ext(0x0104, b"\xaa" * 12), 2)
packets["ext24_md5"] = signed(client + ext(0x0104, b"\xbb" * 20), 1)

configs = {
    "minimal": '[[server]]\naddress = "127.0.0.1:123"\n',
    "listen": '[[listen]]\naddress = "127.0.0.1:1123"\n[local-reference]\nstratum = 1\n',
    "full": open(os.path.join(ROOT, "..", "..", "shared", "config-sketch.toml")).read()
    if os.path.exists(os.path.join(ROOT, "..", "..", "shared", "config-sketch.toml")) else "",
    "clock": '[clock]\nbackend = "virtual"\ninitial-offset = "500ms"\n'
             '[discipline]\nstep-threshold = "128ms"\n',
    "instances": '[[instance]]\nname = "vpna"\nnetns = "pe1-vpna"\n'
                 '[[access]]\ninstance = "vpna"\nlevel = "peer"\nprefixes = ["10.200.1.0/24"]\n'
                 '[rate-limit]\ninterval = "2s"\nburst = 8\nmax-clients = 1000\n',
}
control = {
    "status": '{"command":"status"}\n',
    "sessions": '{"command":"sessions"}\n',
    "extra": '{"command":"status","verbose":true}',
    "bad": '{"command":"reboot"}\n',
}


def write(target, files):
    d = os.path.join(CORPUS, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in files.items():
        if isinstance(data, str):
            data = data.encode()
        if data:
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)


write("packet_parse", packets)
write("mac_verify", packets)
write("extension_fields", {
    "two": with_ext[48:], "one28": with_ext28[48:], "one": ext(0x0104, b"\xaa" * 12),
    "bad_len": b"\x01\x04\x00\x0f" + b"\0" * 12,
})
write("config_parse", configs)
write("control_request", control)


def mode6(version, opcode, data=b"", assoc=0, sequence=1):
    """An NTP control request (RFC 9327): header, data padded to 4."""
    body = struct.pack("!BBHHHHH", (version << 3) | 6, opcode, sequence, 0,
                       assoc, 0, len(data)) + data
    return body + b"\0" * (-len(body) % 4)


write("mode6_parse", {
    "readstat": mode6(2, 1),
    "readvar-named": mode6(2, 2, b"offset,stratum"),
    "writevar": mode6(4, 3, b"leap=1"),
})
