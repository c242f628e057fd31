"""Backup -> wipe -> restore on a node of its own (own databases, own root, own stack):
the same domains, mailboxes, aliases, templates, parameters and certificates come
back, and mail delivered before the backup is readable over IMAPS afterwards."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from rupost import config as node_config
from rupost.config import DEFAULT_PORTS, DatabaseSettings
from support.instance import Instance, free_ports

from conftest import DB_PASSWORD
from mailclients import message, smtp, wait_for_subject

DBS = {"main": "bk_rupost", "data": "bk_rupost_data", "logs": "bk_rupost_logs"}

CUSTOM_TEMPLATE = """\
apiVersion: rupost/v1
kind: ConfigurationTemplate
metadata: {name: bk-custom, version: 1.0.0}
extends: standard@1.0.0
parameters: {}
components: {}
"""


def cli(root, *args, stdin=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "rupost.cli", "--root", str(root), *args], input=stdin,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"rupost {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    return proc


def snapshot(app) -> dict:
    from sqlalchemy import select

    from rupost.db.models import Certificate, DHParam

    with app.dbs.session("main") as s:
        certs = sorted((c.name, c.cert_type, c.active, c.cert_pem, c.key_pem) for c in s.scalars(select(Certificate)))
        dh = sorted((d.name, d.active, d.pem) for d in s.scalars(select(DHParam)))
    # every table of rupost_data (distribution lists and whatever else lands there), row by row;
    # SOGo's own tables change when SOGo runs and are left out
    import sqlalchemy as sa

    with app.dbs.engine("data").connect() as conn:
        tables = [r[0] for r in conn.execute(sa.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'sogo%' "
            "ORDER BY tablename"))]
        data_tables = {t: tuple(conn.execute(sa.text(
            f'SELECT count(*), md5(coalesce(string_agg(x::text, \',\' ORDER BY x::text), \'\')) FROM "{t}" x'
        )).one()) for t in tables}
    return {
        "data_tables": data_tables,
        "domains": sorted((d["name"], d["enabled"]) for d in app.domains.list()),
        "mailboxes": [(m["address"], m.get("quota_bytes"), m.get("enabled")) for m in app.mailboxes.list()],
        "aliases": [(a["address"], tuple(a["destinations"])) for a in app.aliases.list()],
        "templates": sorted((t["name"], t["version"], t["active"]) for t in app.templates.list()),
        "parameters": app.settings.get("template_parameters"),
        "certificates": certs,
        "dhparams": dh,
    }


@pytest.fixture(scope="module")
def bk(workdir, pg, node):
    inst = Instance(workdir / "bk", DatabaseSettings(host="127.0.0.1", port=pg.port, user="rupost",
                                                     password=DB_PASSWORD, **DBS), node_name="bk1")
    inst.configure()
    inst.deploy()
    yield inst
    inst.stop()


def test_backup_wipe_restore(bk, pg, tmp_path):
    app = bk.app
    app.domains.add("bk-one.test")
    app.domains.add("bk-two.test")
    app.mailboxes.add("alice@bk-one.test", "alice-secret-1", "1G")
    app.mailboxes.add("bob@bk-two.test", "bob-secret-2", "0")
    app.aliases.add("team@bk-one.test", ["alice@bk-one.test", "bob@bk-two.test"])
    app.templates.import_text(CUSTOM_TEMPLATE)
    app.templates.set_parameters({"sogo_workers": 2})

    client = smtp(bk.ports["smtp"])
    client.send_message(message("sender@example.org", "team@bk-one.test", "before the backup"))
    client.quit()
    wait_for_subject(bk.ports["imaps"], "alice@bk-one.test", "alice-secret-1", "before the backup")
    wait_for_subject(bk.ports["imaps"], "bob@bk-two.test", "bob-secret-2", "before the backup")
    before = snapshot(app)

    # a backup through the real CLI, into a directory and into an archive
    target = tmp_path / "backup"
    out = cli(bk.root, "backup", "--dir", str(target), "--with-mail").stdout
    assert DB_PASSWORD not in out
    manifest = json.loads((target / "manifest.json").read_text())
    assert set(manifest["files"]) == {"db-main.dump", "db-data.dump", "db-logs.dump", "config.json", "mail.tar"}
    assert manifest["counts"]["mailboxes"] == 2 and manifest["counts"]["domains"] == 2
    assert oct((target / "config.json").stat().st_mode & 0o777) == "0o600"
    assert json.loads((target / "config.json").read_text())["database"]["main"] == DBS["main"]
    archive = tmp_path / "node.tar.gz"
    cli(bk.root, "backup", "--archive", str(archive))
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    with tarfile.open(archive) as tar:
        assert "manifest.json" in tar.getnames() and "mail.tar" not in tar.getnames()
    # a backup never overwrites one
    again = cli(bk.root, "backup", "--dir", str(target), check=False)
    assert again.returncode == 1 and "not an empty directory" in again.stderr

    # a damaged backup is refused before anything is touched, naming the file
    damaged = tmp_path / "damaged"
    shutil.copytree(target, damaged)
    with open(damaged / "db-data.dump", "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    bad = cli(bk.root, "restore", str(damaged), "--force", check=False)
    assert bad.returncode == 1 and "db-data.dump" in bad.stderr and "checksum" in bad.stderr

    # restoring over a node that has data is refused without --force
    busy = cli(bk.root, "restore", str(target), check=False)
    assert busy.returncode == 1 and "not empty" in busy.stderr and DBS["data"] in busy.stderr
    assert snapshot(app) == before

    # wipe: the stack stops, the databases are dropped, the node's whole root goes
    bk.stop()
    bk._app = None
    for name in DBS.values():
        pg.psql(f'DROP DATABASE "{name}" WITH (FORCE)')
    shutil.rmtree(bk.root)
    assert not bk.root.exists()

    # a fresh node: restore installs the backup's config.json, recreates the databases
    restored = cli(bk.root, "restore", str(target), "--no-deploy")
    assert "restored" in restored.stdout and DB_PASSWORD not in restored.stdout
    assert oct(bk.layout.config_file.stat().st_mode & 0o777) == "0o600"
    assert json.loads(bk.layout.config_file.read_text()) == json.loads((target / "config.json").read_text())
    assert snapshot(bk.app) == before
    # the old stack's ports were free for a while (other processes may have taken one):
    # this fresh node gets new ones, then the restored configuration is deployed
    cfg = node_config.load(bk.layout)
    cfg.ports = dict(zip(DEFAULT_PORTS, free_ports(len(DEFAULT_PORTS))))
    node_config.save(bk.layout, cfg)
    bk.config = cfg
    bk._app.close()
    bk._app = None
    bk.deploy()
    # mail delivered before the backup is readable through the restored stack
    body = wait_for_subject(bk.ports["imaps"], "alice@bk-one.test", "alice-secret-1", "before the backup")
    assert b"hello from the tests" in body
    wait_for_subject(bk.ports["imaps"], "bob@bk-two.test", "bob-secret-2", "before the backup")
    # and new mail flows
    client = smtp(bk.ports["smtp"])
    client.send_message(message("sender@example.org", "alice@bk-one.test", "after the restore"))
    client.quit()
    wait_for_subject(bk.ports["imaps"], "alice@bk-one.test", "alice-secret-1", "after the restore")

    # --force replaces the contents of existing databases from the archive, and deploys
    # onto the running stack (the node keeps its own config.json)
    bk.app.domains.add("bk-after.test")
    forced = cli(bk.root, "restore", str(archive), "--force")
    assert "restored" in forced.stdout and "deployed generation" in forced.stdout
    bk._app.close()
    bk._app = None
    assert snapshot(bk.app) == before
    wait_for_subject(bk.ports["imaps"], "alice@bk-one.test", "alice-secret-1", "before the backup")
    assert os.path.exists(bk.layout.mail_storage / "bk-one.test")
