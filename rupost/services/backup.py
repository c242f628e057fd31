"""Backup and restore of a node: the three databases, the node configuration and,
optionally, the mail storage, with a manifest of SHA-256 checksums.

Layout of a backup (a directory, or the same files in a tar archive):

- ``manifest.json``: format, versions, databases (name, schema heads), counts of
  the main objects, and the size and SHA-256 of every other file;
- ``db-main.dump``, ``db-data.dump``, ``db-logs.dump``: ``pg_dump --format=custom``
  of ``rupost``, ``rupost_data``, ``rupost_logs`` (each consistent in itself: one
  snapshot per database);
- ``config.json``: the node configuration (it holds the database password: the
  file is written 0600 and never printed);
- ``mail.tar`` (with ``--with-mail``): the mail storage, numeric owners kept.

Certificates, DH parameters and templates live in the ``rupost`` database, so
they travel with it. A restore verifies every checksum before it touches
anything, refuses to overwrite databases that hold tables unless forced,
restores each database in one transaction, brings the schema up to date and
deploys the restored configuration onto this node.
"""
from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from .. import __version__
from .. import config as node_config
from ..db import endpoints
from ..db.engine import KINDS, Databases
from ..errors import ConflictError, DatabaseError, RuPostError, ValidationError

if TYPE_CHECKING:
    from ..paths import Layout
    from . import Services

FORMAT = "rupost-backup/1"
MANIFEST = "manifest.json"
CONFIG = "config.json"
MAIL = "mail.tar"
DUMP = "db-{kind}.dump"
_CHUNK = 1 << 20


class BackupError(RuPostError):
    """A backup or restore step failed; the message names the step and the file."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _pg_env(settings: node_config.DatabaseSettings) -> dict:
    env = dict(os.environ)
    env.update({**endpoints.libpq_environment(settings), "PGUSER": settings.user,
                "PGPASSWORD": settings.password or "", "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "rupost-backup"})
    return env


def _run(argv: list[str], env: dict, what: str, timeout: float = 6 * 3600) -> str:
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd="/")
    except FileNotFoundError:
        raise BackupError(f"{what}: {argv[0]} is not installed (apt-get install postgresql-client)") from None
    except subprocess.TimeoutExpired:
        raise BackupError(f"{what}: {argv[0]} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise BackupError(f"{what} failed: {' / '.join(detail[-3:]) or f'exit code {proc.returncode}'}")
    return proc.stdout


def _tool_version(tool: str) -> str:
    try:
        return subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except FileNotFoundError:
        raise BackupError(f"{tool} is not installed (apt-get install postgresql-client)") from None


def check_overwrite(busy: dict[str, int], force: bool) -> None:
    """Refuse to restore over databases that hold tables (name -> how many), unless forced."""
    if busy and not force:
        raise ConflictError(
            "refusing to overwrite databases that are not empty ("
            + ", ".join(f"{n}: {c} tables" for n, c in busy.items())
            + "): restore into a fresh node, or add --force to replace their contents")


class BackupService:
    def __init__(self, app: Services) -> None:
        self.app = app

    # ------------------------------------------------------------------ backup
    @property
    def directory(self) -> Path:
        return self.app.layout.root / "var" / "backups" / "rupost"

    def default_dir(self) -> Path:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        return self.directory / f"{self.app.config.node_name}-{stamp}"

    def list(self) -> list[dict]:
        """The backups written into the default directory (those without --dir/--archive), newest
        first; one without a readable manifest is listed as incomplete (cut short, or not ours)."""
        try:
            entries = [p for p in self.directory.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []
        out = []
        for path in entries:
            try:
                manifest = json.loads((path / MANIFEST).read_text())
                complete = isinstance(manifest, dict) and isinstance(manifest.get("files"), dict)
            except (OSError, ValueError):
                manifest, complete = {}, False
            manifest = manifest if complete else {}
            files = manifest.get("files", {})
            out.append({"name": path.name, "path": str(path), "created_at": manifest.get("created_at"),
                        "node": manifest.get("node"), "with_mail": bool(manifest.get("with_mail")),
                        "size": sum(int(f.get("size", 0)) for f in files.values()), "complete": complete})
        return sorted(out, key=lambda b: (b["created_at"] or "", b["name"]), reverse=True)

    def create(self, directory: str | None = None, archive: str | None = None, with_mail: bool = False) -> dict:
        """Write a backup into a new directory, or into an archive (.tar, .tar.gz, .tgz)."""
        if directory and archive:
            raise ValidationError("give either --dir or --archive, not both")
        if archive:
            target = Path(archive).absolute()
            if target.exists():
                raise ConflictError(f"{target} already exists: a backup never overwrites a file")
            if not target.parent.is_dir():
                raise ValidationError(f"{target.parent} is not a directory")
            if not target.name.endswith((".tar", ".tar.gz", ".tgz")):
                raise ValidationError(f"{target.name}: the archive name must end in .tar, .tar.gz or .tgz")
            work = Path(tempfile.mkdtemp(prefix=".rupost-backup-", dir=target.parent))
            try:
                manifest = self._write(work, with_mail)
                tmp = target.with_name(target.name + ".part")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                mode: Literal["w:gz", "w"] = "w:gz" if target.name.endswith(("gz", "tgz")) else "w"
                with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode=mode) as tar:
                    for name in sorted(p.name for p in work.iterdir()):
                        tar.add(work / name, arcname=name)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(work, ignore_errors=True)
                Path(str(target) + ".part").unlink(missing_ok=True)
            manifest["path"] = str(target)
        else:
            target = Path(directory).absolute() if directory else self.default_dir()
            if target.exists() and (not target.is_dir() or any(target.iterdir())):
                raise ConflictError(f"{target} exists and is not an empty directory: a backup never overwrites one")
            target.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(target, 0o700)
            try:
                manifest = self._write(target, with_mail)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
            manifest["path"] = str(target)
        self.app.audit.record("backup", manifest["path"], with_mail=with_mail,
                              size=sum(f["size"] for f in manifest["files"].values()))
        return manifest

    def _write(self, target: Path, with_mail: bool) -> dict:
        app = self.app
        settings = app.config.database
        env = _pg_env(settings)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "rupost_version": __version__,
            "node": app.config.node_name,
            "fqdn": app.config.fqdn,
            "postgresql": {"pg_dump": _tool_version("pg_dump"), "server": self._server_version()},
            "databases": {},
            "counts": self.counts(app.dbs),
            "with_mail": with_mail,
            "mail_storage": str(app.layout.mail_storage),
            "files": {},
        }
        for kind in KINDS:
            name = settings.names()[kind]
            out = target / DUMP.format(kind=kind)
            _run(["pg_dump", "--format=custom", "--compress=6", "--no-password", "--dbname", name,
                  "--file", str(out)], env, f"pg_dump of database {name}")
            os.chmod(out, 0o600)
            manifest["databases"][kind] = {"name": name, "file": out.name, "heads": self._heads(kind)}
        fd = os.open(target / CONFIG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(app.config.to_json())
        if with_mail:
            storage = app.layout.mail_storage
            if not storage.is_dir():
                raise BackupError(f"mail storage {storage} does not exist on this node")
            _run(["tar", "--create", "--file", str(target / MAIL), "--numeric-owner", "--sparse",
                  "--directory", str(storage), "."], os.environ.copy(), f"archiving mail storage {storage}")
            os.chmod(target / MAIL, 0o600)
        for path in sorted(target.iterdir()):
            manifest["files"][path.name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        fd = os.open(target / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return manifest

    def _server_version(self) -> str:
        try:
            with self.app.dbs.engine("main").connect() as conn:
                return conn.execute(sa.text("SHOW server_version")).scalar()  # type: ignore[return-value]
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"cannot reach the database server: {exc.__class__.__name__}") from None

    def _heads(self, kind: str) -> builtins.list[str]:
        with self.app.dbs.engine(kind).connect() as conn:
            try:
                return sorted(r[0] for r in conn.execute(sa.text("SELECT version_num FROM alembic_version")))
            except sa.exc.ProgrammingError:
                return []

    @staticmethod
    def counts(dbs: Databases) -> dict:
        """The objects an administrator recognises, to compare a restore against its backup."""
        out = {}
        for kind, table in (("data", "domains"), ("data", "mailboxes"), ("data", "aliases"),
                            ("main", "templates"), ("main", "certificates"), ("main", "dhparams")):
            try:
                with dbs.engine(kind).connect() as conn:
                    out[table] = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
            except sa.exc.ProgrammingError:
                out[table] = None
        return out

    # ----------------------------------------------------------------- verify
    @staticmethod
    def verify(source: Path) -> dict:
        """Check the manifest and every file's size and checksum; return the manifest."""
        manifest_path = source / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
        except FileNotFoundError:
            raise ValidationError(f"{source} is not a RuPost backup: {MANIFEST} is missing") from None
        except ValueError as exc:
            raise ValidationError(f"{manifest_path}: not valid JSON: {exc}") from None
        if manifest.get("format") != FORMAT:
            raise ValidationError(f"{manifest_path}: unknown backup format {manifest.get('format')!r} "
                                  f"(this RuPost reads {FORMAT})")
        files = manifest.get("files") or {}
        required = [DUMP.format(kind=k) for k in KINDS] + [CONFIG]
        problems = [f"{name}: listed as required but not in the manifest" for name in required if name not in files]
        for name, meta in sorted(files.items()):
            path = source / name
            if "/" in name or name in ("", ".", ".."):
                problems.append(f"{name}: invalid file name in the manifest")
            elif not path.is_file():
                problems.append(f"{name}: missing")
            elif path.stat().st_size != meta.get("size"):
                problems.append(f"{name}: size {path.stat().st_size}, the manifest says {meta.get('size')}")
            elif sha256_file(path) != meta.get("sha256"):
                problems.append(f"{name}: SHA-256 checksum does not match the manifest")
        if problems:
            raise ValidationError(f"backup {source} is damaged, nothing was restored: " + "; ".join(problems))
        return manifest

    # ---------------------------------------------------------------- restore
    @staticmethod
    def _unpack(path: Path, into: Path) -> Path:
        if path.is_dir():
            return path
        if not path.is_file():
            raise ValidationError(f"{path} does not exist")
        try:
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    if not member.isfile() or "/" in member.name.strip("./") or member.name.startswith(("/", "..")):
                        raise ValidationError(f"{path}: unexpected entry {member.name!r}: not a RuPost backup")
                tar.extractall(into, filter="data")
        except tarfile.TarError as exc:
            raise ValidationError(f"{path}: not a readable tar archive: {exc}") from None
        return into

    @staticmethod
    def restore(layout: Layout, source: str, force: bool = False, with_mail: bool = True, deploy: bool = True,
                actor: str | None = None, progress: Callable[[str], None] | None = None) -> dict:
        """Bring this node (fresh, or wiped) back to the state of a backup."""
        say = progress or (lambda _msg: None)
        src = Path(source).absolute()
        # scratch space next to the backup (an unpacked archive and the SQL spool can be large)
        scratch_parent = src.parent if os.access(src.parent, os.W_OK) else None
        work = Path(tempfile.mkdtemp(prefix=".rupost-restore-", dir=scratch_parent))
        os.chmod(work, 0o700)
        try:
            backup_dir = BackupService._unpack(src, work)
            manifest = BackupService.verify(backup_dir)
            say(f"backup of node {manifest.get('node')} from {manifest.get('created_at')}: checksums verified")
            report: dict[str, Any] = {"source": str(src), "created_at": manifest.get("created_at"),
                                      "node": manifest.get("node"), "steps": []}
            cfg = BackupService._restored_node_config(layout, backup_dir, report)
            BackupService._restore_databases(cfg.database, backup_dir, manifest, work, force=force, say=say,
                                             report=report)
            BackupService._start_restored_node(layout, cfg, src, backup_dir, manifest, with_mail=with_mail,
                                               deploy=deploy, actor=actor, say=say, report=report)
            return report
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _restored_node_config(layout: Layout, backup_dir: Path, report: dict) -> node_config.NodeConfig:
        """This node's own configuration when it has one, else the backup's (installed)."""
        if layout.config_file.exists():
            report["steps"].append(f"kept this node's configuration {layout.config_file}")
            return node_config.load(layout)
        try:
            cfg = node_config.NodeConfig.from_dict(json.loads((backup_dir / CONFIG).read_text()))
        except (ValueError, TypeError, RuPostError) as exc:
            raise ValidationError(f"config.json in the backup is invalid: {exc}") from None
        layout.ensure_base()
        node_config.save(layout, cfg, owner="rupost")
        report["steps"].append(f"installed the backup's node configuration as {layout.config_file} (0600)")
        return cfg

    @staticmethod
    def _restore_databases(db: node_config.DatabaseSettings, backup_dir: Path, manifest: dict, work: Path, *,
                           force: bool, say: Callable[[str], None], report: dict) -> None:
        from . import setup

        sreport = setup.SetupReport()
        setup.connect_or_create(db, sreport)
        report["steps"] += sreport.steps
        dbs = Databases(db)
        try:
            busy = {}
            for kind in KINDS:
                tables = BackupService._table_count(dbs, kind)
                if tables:
                    busy[dbs.name(kind)] = tables
            check_overwrite(busy, force)
            env = _pg_env(db)
            for kind in KINDS:
                name = dbs.name(kind)
                dump = backup_dir / manifest["databases"][kind]["file"]
                # dropping and restoring happen in one transaction: a failure leaves the old contents
                script = "DROP SCHEMA IF EXISTS public CASCADE;\nCREATE SCHEMA public;\n" if name in busy else ""
                BackupService._restore_db(dump, name, env, script, work)
                say(f"database {name} restored")
                report["steps"].append(f"database {name} restored from {dump.name}")
        finally:
            dbs.dispose()

    @staticmethod
    def _start_restored_node(layout: Layout, cfg: node_config.NodeConfig, src: Path, backup_dir: Path,
                             manifest: dict, *, with_mail: bool, deploy: bool, actor: str | None,
                             say: Callable[[str], None], report: dict) -> None:
        """Schema upgrade, mail storage, registration and a deploy on the restored databases."""
        from adapters.dovecot import ensure_mail_user

        from ..db import migrate
        from . import Actor, Runtime

        ensure_mail_user()  # the owner of mail storage (UID 420) on a fresh machine
        layout.ensure_base()
        app = Runtime(layout, cfg).services(Actor.from_environment(actor))
        try:
            migrate.upgrade(app.dbs)
            report["steps"].append("database schema brought up to date")
            # the dumps carry no grants (pg_restore --no-privileges) and the restored settings
            # the daemons' role passwords of the backup's time: roles, passwords and grants again
            from .setup import local_superuser

            report["steps"].extend(app.db_roles.upgrade(local_superuser(cfg.database)))
            if with_mail and MAIL in manifest["files"]:
                BackupService._restore_mail(backup_dir / MAIL, app.layout.mail_storage, say, report)
            app.nodes.register()
            report["counts"] = BackupService.counts(app.dbs)
            report["expected_counts"] = manifest.get("counts", {})
            app.audit.record("restore", str(src), node=manifest.get("node"), created_at=manifest.get("created_at"))
            if deploy:
                say("deploying the restored configuration")
                result = app.deploys.deploy(force=True)
                report["deploy"] = {"generation": result.generation, "result": result.result}
                report["steps"].append(f"deployed generation {result.generation}: {result.result}")
        finally:
            app.close()

    @staticmethod
    def _restore_mail(archive: Path, storage: Path, say: Callable[[str], None], report: dict) -> None:
        storage.mkdir(parents=True, exist_ok=True)
        _run(["tar", "--extract", "--file", str(archive), "--numeric-owner", "--same-permissions", "--directory",
              str(storage)], os.environ.copy(), f"restoring mail storage into {storage}")
        say(f"mail storage restored into {storage}")
        report["steps"].append(f"mail storage restored into {storage}")

    @staticmethod
    def _table_count(dbs: Databases, kind: str) -> int:
        with dbs.engine(kind).connect() as conn:
            return conn.execute(sa.text(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'")).scalar_one()

    @staticmethod
    def _restore_db(dump: Path, name: str, env: dict, prelude: str, scratch: Path) -> None:
        # pg_restore turns the dump into SQL (spooled to scratch space, so a damaged dump is found
        # before anything runs); psql runs the prelude and all of it in one transaction, so
        # a failure leaves the database as it was
        sql = scratch / f"{name}.sql"
        try:
            _run(["pg_restore", "--no-owner", "--no-privileges", "--file", str(sql), str(dump)], env,
                 f"reading {dump.name} (database {name} is unchanged)")
            argv = ["psql", "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-d", name]
            argv += [a for stmt in prelude.splitlines() if stmt for a in ("-c", stmt)] + ["-f", str(sql)]
            _run(argv, env, f"restoring database {name} (its previous contents are kept)")
        finally:
            sql.unlink(missing_ok=True)
