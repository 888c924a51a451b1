#!/usr/bin/python3
"""Misbehaving peers of fedc-server for the integration tests, on loopback.

    raw_peer.py idle PORT SOURCE COUNT SECONDS
        Keeps COUNT TCP connections from the address SOURCE (such as
        127.0.0.2) open without sending a byte, reopening each one the
        server closes, for SECONDS. Prints "opened=N" once the first COUNT
        are open and "connects=N" at the end.
    raw_peer.py client-hello-close PORT [reset]
        Sends a TLS ClientHello and closes the connection, with a TCP reset
        when "reset" is given.
    raw_peer.py send PORT PKI ID MESSAGE
        Completes the TLS handshake with the certificate PKI/ID.pem, sends
        MESSAGE and reads until the server closes. Prints "closed seconds=S".
        MESSAGE is one of:
          goodbye-first      a Goodbye before any Hello
          hello-version-2    a Hello of protocol version 2
          hello-other-id     a Hello whose id is not the certificate's CN
          hello-empty-id     a Hello with an empty id
          big-first          a 100 KB TensorChunk before any Hello
          amplify            a valid Hello, then a 16 MB FitResult of
                             8,000,000 empty tensor specs

Messages are protobuf written out by hand (proto/fedc.proto), so that the
tests need nothing beyond the standard library.
"""
import socket
import ssl
import struct
import sys
import time


def varint(n):
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def field_varint(number, value):
    return varint(number << 3) + varint(value)


def field_bytes(number, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def envelope(body_field, body, version=1):
    return field_varint(1, version) + field_bytes(body_field, body)


def hello(client_id, version=1):
    return envelope(2, field_varint(1, version) + field_bytes(2, client_id) +
                    field_varint(4, 100))


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def message(kind, client_id):
    """Returns the frames to send for MESSAGE and whether a Welcome comes
    back after the first one."""
    if kind == "goodbye-first":
        return [frame(envelope(10, field_bytes(1, "bye")))], False
    if kind == "hello-version-2":
        return [frame(hello(client_id, version=2))], False
    if kind == "hello-other-id":
        return [frame(hello("client-0099"))], False
    if kind == "hello-empty-id":
        return [frame(hello(""))], False
    if kind == "big-first":
        chunk = field_varint(1, 1) + field_bytes(5, bytes(100 * 1000))
        return [frame(envelope(8, chunk))], False
    if kind == "amplify":
        specs = field_bytes(4, b"") * 8000000
        result = field_varint(1, 1) + field_varint(2, 100) + specs
        return [frame(hello(client_id)), frame(envelope(5, result))], True
    raise SystemExit("unknown message " + kind)


def tls_connect(port, pki, client_id):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(f"{pki}/ca.pem")
    ctx.load_cert_chain(f"{pki}/{client_id}.pem", f"{pki}/{client_id}.key")
    ctx.set_alpn_protocols(["fedc/1"])
    ctx.check_hostname = False
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    return ctx.wrap_socket(raw)


def read_frame(conn):
    header = read_exact(conn, 4)
    return read_exact(conn, struct.unpack(">I", header)[0])


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        more = conn.recv(n - len(data))
        if not more:
            raise EOFError("server closed the connection")
        data += more
    return data


def read_until_closed(conn):
    try:
        while conn.recv(65536):
            pass
    except (OSError, ssl.SSLError):
        pass


def send(port, pki, client_id, kind):
    frames, welcome_first = message(kind, client_id)
    conn = tls_connect(port, pki, client_id)
    conn.sendall(frames[0])
    if welcome_first:
        read_frame(conn)
    start = time.monotonic()
    try:
        for f in frames[1:]:
            conn.sendall(f)
    except (OSError, ssl.SSLError):
        pass
    read_until_closed(conn)
    print(f"closed seconds={time.monotonic() - start:.2f}")
    conn.close()


def client_hello_close(port, reset):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(outgoing.read())
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        struct.pack("ii", 1, 0))
    sock.close()


def open_idle(port, source):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def is_closed(sock):
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def idle(port, source, count, seconds):
    socks = [open_idle(port, source) for _ in range(count)]
    connects = count
    print(f"opened={count}", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for i, sock in enumerate(socks):
            if is_closed(sock):
                sock.close()
                socks[i] = open_idle(port, source)
                connects += 1
        time.sleep(0.05)
    for sock in socks:
        sock.close()
    print(f"connects={connects}", flush=True)


def main(argv):
    if len(argv) >= 6 and argv[1] == "idle":
        idle(int(argv[2]), argv[3], int(argv[4]), float(argv[5]))
    elif len(argv) >= 3 and argv[1] == "client-hello-close":
        client_hello_close(int(argv[2]), len(argv) > 3 and argv[3] == "reset")
    elif len(argv) == 6 and argv[1] == "send":
        send(int(argv[2]), argv[3], argv[4], argv[5])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
