"""The parameter server's side of its connections: one thread per worker connection (socketserver), which
authenticates the peer, watches for a cut host, reads each request and answers it. A push is read
straight into a pooled buffer the server hands out, and checked for NaN and inf piece by piece as it
lands; what a request means is the server's business (`ParameterServer._dispatch`, duck-typed here, so
this module does not import the server).
"""
from __future__ import annotations

import errno
import logging
import socket
import socketserver

import numpy as np

from distributed.ps_buffers import Slab
from distributed.ps_wire import BadMessage, WireError, recv_message, send_message, server_handshake

log = logging.getLogger(__name__)


class Refused(Exception):
    """The server refused a request: the peer is answered with the message and its connection stays."""


class Intake:
    """One request's payload as it lands: the pooled buffer it is read into (until the server keeps it), and
    the first array holding a NaN or inf, found piece by piece while each piece is in cache."""

    def __init__(self):
        self.slab: Slab | None = None
        self.not_finite: int | None = None

    def scan(self, i: int, piece: np.ndarray) -> None:
        if self.not_finite is None and not np.isfinite(piece).all():
            self.not_finite = i


KEEPALIVE_PROBES = 3
HEARTBEAT_S = 5.0  # the server's default; both ends find a cut peer within cut_detection_s of it


def cut_detection_s(heartbeat_s: float = HEARTBEAT_S) -> float:
    """How long detect_cut_peer takes at most to find a peer that stopped answering."""
    return (1 + KEEPALIVE_PROBES) * max(1, round(heartbeat_s))


def detect_cut_peer(sock: socket.socket, every_s: float) -> None:
    """Find a peer whose host is cut off (no FIN, no RST ever comes) within about
    (1 + KEEPALIVE_PROBES) * every_s: on an idle connection by TCP keepalive (a probe after every_s idle,
    then every every_s, KEEPALIVE_PROBES unanswered); with data of ours unacknowledged (a reply the cut
    host never received) by TCP_USER_TIMEOUT, which would otherwise leave the kernel retransmitting for
    about 15 minutes. The peer's kernel answers both whatever its process does, so a worker that trains
    long between requests is never taken for a cut one."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; elsewhere the system's (hours) apply
        every = max(1, round(every_s))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, every)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, every)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, cut_detection_s(every_s) * 1000)


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        ps, sock = self.server.ps, self.request
        peer = "%s:%s" % self.client_address[:2]
        cut = False  # the peer stopped answering (keepalive or unacknowledged data timed out): its host is cut off
        ps._register(sock)  # registered first, so stop() can cut even a stalled handshake
        try:
            sock.settimeout(ps.handshake_timeout_s)
            server_handshake(sock, ps._secret, ps.max_payload)
            # Workers stay connected while they train; stop() shuts the socket down.
            sock.settimeout(None)
            detect_cut_peer(sock, ps.heartbeat_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (WireError, OSError) as e:
            log.warning("parameter server: rejected connection from %s: %s", peer, e)
            ps._unregister(sock)
            return
        try:
            while not ps._stopping:
                intake = Intake()
                reading = None          # the weights a pull sends, pinned until sent
                try:
                    header, arrays = recv_message(sock, into=lambda h, specs, n: ps._receive_buffer(h, specs, intake),
                                                  on_piece=intake.scan)
                    reply = ps._dispatch(sock, header, arrays, intake)
                    if header["op"] == "pull":
                        reply, reading = reply[:2], reply[2]
                except ConnectionError:
                    return
                except (Refused, BadMessage) as e:  # the peer is answered; its connection stays
                    reply = ({"op": "error", "message": str(e)}, ())
                except (WireError, OSError):  # out of step or unauthenticated: closed below
                    raise
                except Exception as e:  # a bug in one request must not lose the worker's connection
                    log.exception("parameter server: error handling a request from %s", peer)
                    reply = ({"op": "error", "message": f"the server failed on this request: "
                                                        f"{type(e).__name__}: {str(e)[:200]}"}, ())
                finally:
                    ps._give_back(intake)
                try:  # a peer that stops reading must not hold the weights' buffer for ever
                    sock.settimeout(ps.push_timeout_s)
                    send_message(sock, *reply)
                    sock.settimeout(None)
                finally:
                    if reading is not None:
                        ps._unpin(reading)
        except (WireError, OSError) as e:
            cut = getattr(e, "errno", None) == errno.ETIMEDOUT
            if not ps._stopping:
                log.warning("parameter server: closing connection from %s: %s", peer, e)
        except Exception:  # a bug in one connection must not take the server down
            log.exception("parameter server: unexpected error on connection from %s", peer)
        finally:
            ps._unregister(sock)
            ps._disconnected(sock, self.client_address[0],
                             "its host stopped answering (no TCP acknowledgement or keepalive reply)" if cut
                             else "its connection was closed (its process ended or it gave up)")


class TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
