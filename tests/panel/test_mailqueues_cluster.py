"""The panel's queue page across the cluster: the node selector (this node, one node, all nodes),
the node column, and actions on another node's messages relayed to that node's agent.

The other node is `peer-…`, registered for the test, whose core (run by a serving loop, as its
`rupost run` would) works on the session node's real postfix queue; its queue directory is
recorded as unreachable, so even reading it goes through the relay."""
from __future__ import annotations

import html
import re
import uuid

from sqlalchemy import select

from rupost.db.models import AuditRecord
from .test_ops_areas import queue_one, raw_queue, text
from test_mailqueues import Serving, request_rows


def test_node_selector_lists_and_acts_on_another_nodes_queue(superadmin, readonly, node, mailbox):
    sender, qid = queue_one(node, mailbox)
    peer = f"peer-{uuid.uuid4().hex[:6]}"
    serving = Serving(node, peer)
    serving.alive()
    serving.start()
    try:
        # this node (default): the node column names node1, the selector offers the peer and all nodes
        page = text(superadmin.get(f"/mailqueues/?q=sender={sender}"))
        assert f"<td>node1</td><td><a href=\"/mailqueues/show/{qid}\">{qid}</a>" in page
        assert f'<option value="{peer}">{peer}</option>' in page and '<option value="*"' in page
        assert f'name="id" value="{qid}"' in page  # this node's messages: the bare queue id
        # the peer's queue, read through its core
        page = text(superadmin.get(f"/mailqueues/?q=sender={sender}&node={peer}"))
        assert f"<td>{peer}</td>" in page and f'name="id" value="{peer}:{qid}"' in page, page[-3000:]
        assert f'<option value="{peer}" selected>' in page
        assert f"/mailqueues/show/{qid}?node={peer}" in html.unescape(page)
        # all nodes: the message once per node (both "nodes" are this postfix), unreachable ones named
        page = text(readonly.get(f"/mailqueues/?q=sender={sender}&node=*"))
        rows = re.findall(r"<td>([\w-]+)</td><td><a href=\"/mailqueues/show/" + qid, page)
        assert sorted(rows) == sorted(["node1", peer]) and 'name="id"' not in page
        shown = superadmin.get(f"/mailqueues/show/{qid}?node={peer}")
        assert shown.status_code == 200 and "queued from the panel test" in text(shown)
        assert f'name="id" value="{peer}:{qid}"' in text(shown)

        # hold from the list of all nodes, on the peer: run by the peer's core, audited there
        r = superadmin.post("/mailqueues/act", {"action": "hold", "id": f"{peer}:{qid}", "node": "*"},
                            follow_redirects=True)
        assert f"{peer}: " in text(r) and ("Held: 1" in text(r) or "Задержано сообщений: 1" in text(r)), text(r)[-2000:]
        assert raw_queue(node)[qid]["queue_name"] == "hold"
        with node.app.dbs.session("logs") as s:
            record = s.scalars(select(AuditRecord).where(AuditRecord.action == "mailqueue.hold",
                                                         AuditRecord.target == qid)).all()[-1]
        assert record.source == "panel" and record.details["node"] == peer
        assert record.details["requested_from"] == "node1" and record.details["address"] == superadmin.address
        assert record.actor.startswith("super")
        assert request_rows(node, node_name=peer, action="hold")[-1].source == "panel"
        # release everything matching the filter on the selected node (the peer)
        superadmin.post("/mailqueues/act", {"action": "release", "scope": "matching", "q": f"sender={sender}",
                                            "node": peer})
        assert raw_queue(node)[qid]["queue_name"] in ("deferred", "active", "incoming")
        # the peer's errors come back named, nothing changes
        r = superadmin.post("/mailqueues/act", {"action": "release", "id": f"{peer}:{qid}"}, follow_redirects=True)
        assert f"node {peer}: not on hold: {qid}" in html.unescape(text(r))
        r = superadmin.post("/mailqueues/act", {"action": "hold", "id": f"{peer}:../etc"}, follow_redirects=True)
        assert "invalid queue id" in text(r)
        r = superadmin.post("/mailqueues/act", {"action": "hold", "id": f"nosuchnode:{qid}"}, follow_redirects=True)
        assert "node nosuchnode is not registered" in text(r)
        assert superadmin.post("/mailqueues/flush", {"node": peer}).status_code == 302
        assert raw_queue(node)[qid]["queue_name"] == "deferred"
        # a peer whose agent is not running is named on the page, and nothing is changed
        serving.alive(False)
        page = text(superadmin.get(f"/mailqueues/?node=*&q=sender={sender}"))
        assert f"{peer}: node {peer} did not answer" in html.unescape(page)
        r = superadmin.post("/mailqueues/act", {"action": "delete", "id": f"{peer}:{qid}"}, follow_redirects=True)
        assert f"node {peer} did not answer" in html.unescape(text(r))
        assert qid in raw_queue(node)
        # read-only administrators act on no node
        assert readonly.post("/mailqueues/act", {"action": "delete", "id": f"{peer}:{qid}"}).status_code == 403
        serving.alive()
        superadmin.post("/mailqueues/act", {"action": "delete", "id": f"{peer}:{qid}", "node": peer})
        assert qid not in raw_queue(node)
    finally:
        serving.stop()
        serving.restore()
        node.app.mailqueues.act("delete", match=[f"sender={sender}"])
