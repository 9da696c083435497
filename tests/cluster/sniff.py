"""What an eavesdropper on the machine reads: TCP payloads with their ports, captured with a raw packet
socket (AF_PACKET, root) on one interface (loopback) or on all of them (the hosts' bridge and cards, which
may not exist yet when the capture starts), IPv4 only. The most recent `keep_bytes` are kept, so that the
ports of interest can be chosen after the capture."""
from __future__ import annotations

import collections
import socket
import struct
import threading

ETH_P_ALL = 0x0003


class Sniffer:
    def __init__(self, interface: str | None = "lo", keep_bytes: int = 64 << 20):
        self.keep_bytes, self.kept = keep_bytes, 0
        self.interface = interface
        self.packets: collections.deque[tuple[int, int, bytes]] = collections.deque()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        if interface:
            self._sock.bind((interface, 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sniffer", daemon=True)

    def __enter__(self) -> "Sniffer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, meta = self._sock.recvfrom(1 << 16)
            except socket.timeout:
                continue
            if meta[2] == socket.PACKET_OUTGOING and self.interface == "lo":  # loopback shows each packet twice
                continue
            packet = tcp_payload(frame)
            if packet:
                self.packets.append(packet)
                self.kept += len(packet[2])
                while self.kept > self.keep_bytes:
                    self.kept -= len(self.packets.popleft()[2])

    def payloads(self, port: int) -> list[bytes]:
        """The kept payloads from or to `port`."""
        return [data for sport, dport, data in self.packets if port in (sport, dport)]


def tcp_payload(frame: bytes) -> tuple[int, int, bytes] | None:
    """(source port, destination port, payload) of an Ethernet frame carrying IPv4 TCP data, else None."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != 6:  # not TCP
        return None
    total = struct.unpack("!H", ip[2:4])[0]
    tcp = ip[ihl:total]
    sport, dport = struct.unpack("!HH", tcp[:4])
    payload = tcp[(tcp[12] >> 4) * 4:]
    return (sport, dport, payload) if payload else None
