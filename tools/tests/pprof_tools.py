"""Small helpers shared by pyro serve's Python tests (standard library only): a pprof encoder, Connect
PushRequest encoders, and an HTTP client that can also send what a well-behaved client never would."""
import base64
import gzip
import json
import socket
import struct


def _varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field, wire):
    return _varint(field << 3 | wire)


def _bytes(field, data):
    return _key(field, 2) + _varint(len(data)) + data


def _uint(field, v):
    return _key(field, 0) + _varint(v)


def _packed(field, values):
    return _bytes(field, b"".join(_varint(v) for v in values))


def pprof(sample_types, samples, time_nanos=0, duration_nanos=0, period=0, period_type=None):
    """sample_types: [(type, unit)]; samples: [(stack root-first [names], [values], {label: value})]."""
    strings = [""]
    index = {"": 0}

    def s(text):
        if text not in index:
            index[text] = len(strings)
            strings.append(text)
        return index[text]

    functions, locations = {}, {}
    out = bytearray()
    for t, u in sample_types:
        out += _bytes(1, _uint(1, s(t)) + _uint(2, s(u)))
    body_samples = bytearray()
    for stack, values, labels in samples:
        ids = []
        for name in reversed(stack):  # pprof: leaf first
            if name not in functions:
                functions[name] = len(functions) + 1
                locations[name] = len(locations) + 1
            ids.append(locations[name])
        sample = _packed(1, ids) + _packed(2, values)
        for k, v in (labels or {}).items():
            sample += _bytes(3, _uint(1, s(k)) + _uint(2, s(v)))
        body_samples += _bytes(2, sample)
    out += body_samples
    for name, loc in locations.items():
        out += _bytes(4, _uint(1, loc) + _bytes(4, _uint(1, functions[name])))
    for name, fid in functions.items():
        out += _bytes(5, _uint(1, fid) + _uint(2, s(name)) + _uint(3, s(name)))
    if period_type:
        s(period_type[0]), s(period_type[1])
    for text in strings:
        out += _bytes(6, text.encode())
    if time_nanos:
        out += _uint(9, time_nanos)
    if duration_nanos:
        out += _uint(10, duration_nanos)
    if period_type:
        out += _bytes(11, _uint(1, s(period_type[0])) + _uint(2, s(period_type[1])))
    if period:
        out += _uint(12, period)
    return bytes(out)


def push_proto(series):
    """series: [({label: value}, [raw_profile bytes])] -> PushRequest bytes."""
    out = bytearray()
    for labels, profiles in series:
        body = bytearray()
        for k, v in labels.items():
            body += _bytes(1, _bytes(1, k.encode()) + _bytes(2, v.encode()))
        for p in profiles:
            body += _bytes(2, _bytes(1, p) + _bytes(2, b"id"))
        out += _bytes(1, bytes(body))
    return bytes(out)


def push_json(series):
    return json.dumps({"series": [{"labels": [{"name": k, "value": v} for k, v in labels.items()],
                                   "samples": [{"rawProfile": base64.b64encode(p).decode(), "ID": "x"} for p in profiles]}
                                  for labels, profiles in series]}).encode()


def multipart(parts, boundary="pyroscopeboundary42"):
    """parts: [(name, bytes)] -> (content type, body)."""
    body = bytearray()
    for name, data in parts:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n").encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", bytes(body)


def raw_http(port, data, timeout=15, shutdown_write=False, host="127.0.0.1"):
    """Sends bytes as they are; returns (status or None, whole answer bytes)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(data)
        if shutdown_write:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer:
                head, _, rest = answer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if len(rest) >= length:
                    break
        status = None
        if answer.startswith(b"HTTP/1.1 "):
            status = int(answer[9:12])
        return status, answer
    finally:
        sock.close()


def gzip_bytes(data):
    return gzip.compress(data)


__all__ = ["pprof", "push_proto", "push_json", "multipart", "raw_http", "gzip_bytes", "struct"]
