"""The node agent: the mail components live and die together."""
from __future__ import annotations

import os
import signal
import time

import pytest

from rupost.node.agent import NodeAgent
from rupost.config import DatabaseSettings
from support.instance import Instance


@pytest.fixture(scope="module")
def lone_node(workdir, pg):
    """A node of its own (own databases), so killing its daemons disturbs no other test."""
    inst = Instance(workdir / "agent-node", DatabaseSettings(
        port=pg.port, user="rupost_agent", password="agent-db-pass", main="agent_main", data="agent_data",
        logs="agent_logs"), node_name="agentnode")
    inst.configure()
    inst.deploy()
    yield inst
    inst.stop()


def health(node) -> int:
    from support.cluster import health as health_of

    return health_of(node, "127.0.0.1", node.ports["health"])


def test_drained_node_reports_down_and_enable_brings_it_back(lone_node):
    app = lone_node.app
    agent = NodeAgent(app, interval=0.1, hold_down=0)
    assert agent.check_once() == "in_service" and wait_until(lambda: health(lone_node) == 200)
    app.nodes.set_admin_state("agentnode", drained=True)
    agent.check_once()
    assert wait_until(lambda: health(lone_node) == 503)
    assert all(state["running"] for state in app.components.states().values())  # drained, not stopped
    app.nodes.set_admin_state("agentnode", drained=False)
    agent.check_once()
    assert wait_until(lambda: health(lone_node) == 200)


def wait_until(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_crashed_component_takes_the_node_out_of_service_then_back(lone_node):
    app = lone_node.app
    agent = NodeAgent(app, interval=0.1, hold_down=0)
    assert agent.check_once() == "in_service"
    dovecot_pid = app.backend.pid("dovecot")
    os.kill(dovecot_pid, signal.SIGKILL)
    assert wait_until(lambda: not app.backend.is_running("dovecot"))

    assert agent.check_once() == "out_of_service"
    # one unit: the other mail components were stopped too; the HA agent stays up and says "down"
    states = app.components.states()
    assert [n for n in ("dovecot", "postfix", "sogo", "nginx") if states[n]["running"]] == []
    assert states["haproxy"]["running"] and states["memcached"]["running"]
    assert health(lone_node) == 503
    assert app.nodes.list()[0]["state"] == "out_of_service"

    assert agent.check_once() == "in_service"  # hold-down 0: restart and probe at once
    assert all(state["running"] for state in app.components.states().values())
    assert app.backend.pid("dovecot") != dovecot_pid
    assert wait_until(lambda: health(lone_node) == 200)
    log = app.layout.monitor_log.read_text()
    assert "out_of_service: down: dovecot" in log and "in_service: components restarted" in log
    assert app.nodes.list()[0]["state"] == "in_service"


def test_mail_deferred_while_a_component_was_dead_goes_out_when_the_node_is_back(lone_node):
    """dovecot killed: until the agent notices, postfix still accepts mail and defers it (LMTP
    refused), and would retry it only after its backoff (minutes). Found under systemd
    (tests/test_systemd_node.py: 221 of 236 messages still queued 90 s after the node was back).
    The agent flushes the queue once the node is back in service."""
    from mailclients import message, smtp

    app = lone_node.app
    app.domains.add("agentdefer.test")
    address = "deferred@agentdefer.test"
    app.mailboxes.add(address, "deferred-password-1", "0")
    agent = NodeAgent(app, interval=0.1, hold_down=0)
    assert agent.check_once() == "in_service"
    os.kill(app.backend.pid("dovecot"), signal.SIGKILL)
    assert wait_until(lambda: not app.backend.is_running("dovecot"))
    with smtp(lone_node.ports["smtp"]) as client:
        assert client.send_message(message("someone@example.org", address, "deferred while dovecot was dead")) == {}
    assert wait_until(lambda: app.mailqueues.summary()["deferred"] == 1, 60), app.mailqueues.summary()
    assert agent.check_once() == "out_of_service"
    assert agent.check_once() == "in_service"
    # bounded well below postfix's minimal_backoff_time (300 s): only the flush delivers it in time
    assert wait_until(lambda: sum(app.mailqueues.summary().values()) == 0, 60), app.mailqueues.summary()


def test_a_component_down_during_a_deploy_is_left_to_the_deploy(lone_node):
    """A deploy that restarts a component (sogo on a sogo_workers change: systemctl restart, or
    stop + start) leaves it down for seconds; the agent must not take that for a crash and stop
    the whole mail unit under the deploy (whose probes then failed: found under systemd,
    tests/test_systemd_node.py). Once no deploy holds the lock, a down component counts again."""
    app = lone_node.app
    agent = NodeAgent(app, interval=0.1, hold_down=0)
    assert agent.check_once() == "in_service"
    with app.deploys.lock("deploy"):
        assert app.deploys.in_progress().startswith("rupost deploy by")
        app.backend.stop("sogo", app.component_runtime.process_spec("sogo"))  # as a deploy's restart does
        assert not app.backend.is_running("sogo")
        assert agent.check_once() == "in_service"
        states = app.components.states()
        assert [n for n in ("dovecot", "postfix", "nginx") if not states[n]["running"]] == []
    assert app.deploys.in_progress() is None
    assert agent.check_once() == "out_of_service"  # no deploy: sogo down is a failure of the unit
    assert agent.check_once() == "in_service"
    assert all(state["running"] for state in app.components.states().values())


def test_nginx_killed_outright_comes_back_over_its_own_leftover_sockets(lone_node):
    """SIGKILL to nginx's process group (the OOM killer, a crash of the node) leaves its Unix
    sockets (the refusal servers HAProxy sends clients beyond a limit to) behind; nginx does not
    unlink them, and its next start failed with "Address already in use": the node stayed out
    of service."""
    app = lone_node.app
    agent = NodeAgent(app, interval=0.1, hold_down=0)
    assert agent.check_once() == "in_service"
    sockets = sorted(app.layout.run_dir("nginx").glob("*.sock"))
    assert sockets, "the builtin template's nginx listens on Unix sockets"
    os.killpg(app.backend.pid("nginx"), signal.SIGKILL)
    assert wait_until(lambda: not app.backend.is_running("nginx"))
    assert all(path.exists() for path in sockets)  # left behind

    assert agent.check_once() == "out_of_service"
    assert agent.check_once() == "in_service"
    assert app.backend.is_running("nginx") and wait_until(lambda: health(lone_node) == 200)


def test_agent_flushes_the_account_caches_another_node_asks_it_to(lone_node):
    """A change made on another node reaches this node's dovecot cache through the agent
    (NOTIFY rupost_caches): a mailbox disabled elsewhere is refused here at once."""
    import json
    import threading

    from sqlalchemy import text, update

    from mailclients import imap_login_works
    from rupost.db.models import Mailbox
    from rupost.services import cache

    app = lone_node.app
    app.domains.add("agentcache.test")
    address, password = "cached@agentcache.test", "cached-password-1"
    app.mailboxes.add(address, password, "0")
    agent = NodeAgent(app, interval=0.1, hold_down=0)
    waiting = threading.Thread(target=agent._wait_for_notification, args=(60,), daemon=True)
    waiting.start()  # connects, listens, flushes once
    assert wait_until(lambda: getattr(agent, "_listen", None) is not None)
    time.sleep(0.5)
    assert imap_login_works(lone_node.ports["imaps"], address, password, "127.0.0.91")  # cached now
    with app.dbs.session("data") as s:  # disabled by "another node": nothing flushed here
        s.execute(update(Mailbox).where(Mailbox.address == address).values(enabled=False))
    assert imap_login_works(lone_node.ports["imaps"], address, password, "127.0.0.92")  # the stale cache
    with app.dbs.engine("main").connect() as conn:
        conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": cache.CHANNEL, "p": json.dumps(
            {"node": "othernode", "dovecot": True})})
        conn.commit()
    assert wait_until(lambda: not imap_login_works(lone_node.ports["imaps"], address, password, "127.0.0.93"))
    assert waiting.is_alive(), "a cache request must not end the agent's wait for its next tick"
    from rupost.cluster.rollouts import CHANNEL as ROLLOUTS
    with app.dbs.engine("main").connect() as conn:  # what does end it
        conn.execute(text("SELECT pg_notify(:c, 'agentnode')"), {"c": ROLLOUTS})
        conn.commit()
    waiting.join(15)
    assert not waiting.is_alive()
    agent._listen.close()
