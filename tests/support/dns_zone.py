"""An authoritative UDP name server for the tests: a small responder built on dnspython's
message API, serving whatever zone the test gives it (tests/test_dns_records.py, the
antispam tests' SPF, DKIM and DMARC records)."""
from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class Zone:
    """An authoritative UDP name server for the records in `lines` (zone-file syntax)."""

    def __init__(self):
        self.records: dict[tuple[str, int], dns.rrset.RRset] = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def load(self, lines: list[str]) -> None:
        records = {}
        for line in lines:
            name, ttl, _, rtype, value = line.split(None, 4)
            key = (name.lower(), dns.rdatatype.from_text(rtype))
            rrset = records.setdefault(key, dns.rrset.RRset(dns.name.from_text(name), dns.rdataclass.IN, key[1]))
            rrset.add(dns.rrset.from_text(name, int(ttl), "IN", rtype, value)[0])
        self.records = records

    def _serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            reply.flags |= dns.flags.AA
            question = query.question[0]
            name = question.name.to_text().lower()
            rrset = self.records.get((name, question.rdtype))
            if rrset is not None:
                reply.answer.append(rrset)
            elif not any(n == name for n, _ in self.records):
                reply.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(reply.to_wire(), peer)

    def close(self):
        self.sock.close()
